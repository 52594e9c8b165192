"""The Horovod example (Horovod's PyTorch MNIST script on the digits) runs on mpicoll with only its
import line changed, learns, and its mixed-precision / fp16-allreduce variant runs too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from launch import ROOT, run_ranks

pytest.importorskip("torch")
pytest.importorskip("sklearn")

EXAMPLE = "examples/horovod_digits.py"


def test_only_the_import_line_names_mpicoll():
    code_after_docstring = (ROOT / EXAMPLE).read_text().split('"""', 2)[2]
    code = [line for line in code_after_docstring.splitlines() if "mpicoll" in line]
    assert code == ["import mpicoll.horovod.torch as hvd"], code


def accuracies(output: str) -> list[float]:
    return [float(a) for a in re.findall(r"Test set: Average loss: [\d.]+, Accuracy: ([\d.]+)%", output)]


@pytest.mark.parametrize(("flags", "epochs", "least"), [([], 6, 85.0),
                                                        (["--fp16-allreduce", "--use-mixed-precision"], 3, 30.0)])
def test_horovod_example_trains_on_mpicoll(tmp_path: Path, flags, epochs, least):
    result = run_ranks(3, ["-m", "mpicoll.run", EXAMPLE, "--epochs", str(epochs), *flags], tmp_path, timeout=400,
                       mpi4py_runner=False)
    assert result.returncode == 0, result.stdout[-5000:]
    found = accuracies(result.stdout)
    assert len(found) == epochs, result.stdout[-3000:]
    assert found[-1] >= least, found
    if flags:
        assert "Loss Scale" in result.stdout
