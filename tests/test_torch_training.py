"""The training example on 4 ranks: compressed training keeps up with uncompressed (a shorter run
than the one in bench/RESULTS.md) and every rank ends with bit-identical parameters."""

from __future__ import annotations

import json

import pytest
from launch import run_ranks

pytest.importorskip("torch")
pytest.importorskip("sklearn")


@pytest.mark.parametrize(("mode", "compressors"), [("optimizer", "none,fp16,topk,sign,powersgd"),
                                                      ("ddp", "none,sign,powersgd")])
def test_compressed_training_reaches_uncompressed_accuracy(tmp_path, mode, compressors):
    out = tmp_path / "history.json"
    args = ["examples/train_digits.py", "--mode", mode, "--compressor", compressors, "--epochs", "12",
            "--lr", "0.02", "--quiet", "--json", str(out)]
    result = run_ranks(4, args, tmp_path, timeout=400)
    assert result.returncode == 0, result.stdout[-5000:]
    histories = {h["compressor"]: h for h in json.loads(out.read_text())}
    baseline = histories["none"]["test_accuracy"][-1]
    assert baseline > 0.85, baseline  # it really learned
    for name, h in histories.items():
        assert h["identical_on_all_ranks"] and h["ranks"] == 4 and len(h["test_accuracy"]) == 12
        assert h["test_accuracy"][-1] >= baseline - 0.02, (name, h["test_accuracy"][-1], baseline)
