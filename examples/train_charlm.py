"""A character-level language model trained with Adam, compressed or not: 1-bit Adam's accuracy and traffic.

Corpus: the Python standard library's own sources (the ``*.py`` files directly in
``sysconfig.get_paths()["stdlib"]``, sorted by name, the first ``--corpus-bytes``), which every
Python installation carries, so nothing is downloaded. The first 90% of the text trains, the last
10% validates. Symbols: newline, printable ASCII, and one for anything else (97).

Model: embedding 64 -> one LSTM layer of 256 -> linear to the vocabulary (about 0.37 M
parameters; small, since the CPU is). Global batch ``--batch`` windows of ``--seq`` characters,
the same windows for every method (drawn from ``--seed`` and the step), split over the ranks::

    mpiexec -n 4 python -m mpi4py examples/train_charlm.py --steps 600 --json out.jsonl

Methods (``--methods``): ``adam`` (uncompressed, DistributedOptimizer around torch.optim.Adam),
``onebit`` (:class:`mpicoll.torch.OneBitAdam`, ``--freeze`` warm-up steps), ``onebitbf16`` (the
same, its warm-up's gradients sent as bfloat16: ``warmup_compressor=get("bf16")``), ``zeroone``
(:class:`mpicoll.torch.ZeroOneAdam`, ``--var-freeze``, ``--local-scaler``, ``--local-clipper``;
validated on rank 0's parameters, which are every rank's when the last step synchronized), ``topk`` (1% + error
feedback), ``sign`` (+ error feedback), ``powersgd`` (rank 4 + error feedback): the last three
wrap torch.optim.Adam in DistributedOptimizer. Each reports its validation loss (mean
cross-entropy in nats per character over fixed held-out windows) and the gradient bytes rank 0
sent over the whole run (:mod:`mpicoll.torch.optim.traffic`: ring all-reduce, two-phase and
allgather counted from the payloads produced).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mpicoll
import mpicoll.torch as mt
from mpicoll import compression
from mpicoll.aggregation.choice import choose_path
from mpicoll.torch.optim.traffic import Counting, compressed_sent_bytes, dense_sent_bytes

VOCAB = 97  # newline, printable ASCII 32..126, anything else


def corpus(limit_bytes: int) -> np.ndarray:
    """The standard library's top-level sources, concatenated, as symbol codes (uint8)."""
    text = []
    total = 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        chunk = path.read_text(encoding="utf-8", errors="replace")
        text.append(chunk)
        total += len(chunk)
        if total >= limit_bytes:
            break
    raw = np.frombuffer("".join(text)[:limit_bytes].encode("ascii", errors="replace"), dtype=np.uint8)
    codes = np.where((raw >= 32) & (raw <= 126), raw - 31, 96).astype(np.int64)  # 1..95 printable, 96 other
    codes[raw == 10] = 0
    return codes


class CharLSTM(torch.nn.Module):
    def __init__(self, embed: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, embed)
        self.lstm = torch.nn.LSTM(embed, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.embed(x))[0])


def windows(codes: np.ndarray, starts: np.ndarray, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + np.arange(seq + 1)[None, :]
    block = torch.from_numpy(codes[idx])
    return block[:, :-1], block[:, 1:]


def validation_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1)))


def make_optimizer(method: str, model: torch.nn.Module, args: argparse.Namespace) -> tuple[torch.optim.Optimizer, Any]:
    """The optimizer, and the Counting wrapper of DistributedOptimizer's compressor (or None)."""
    if method in ("onebit", "onebitbf16"):
        sign = compression.get("sign", block=args.sign_block) if args.sign_block else compression.get("sign")
        wire = compression.get("bf16") if method == "onebitbf16" else None
        return mt.OneBitAdam(model.parameters(), lr=args.lr, freeze_step=args.freeze, compressor=sign,
                             warmup_compressor=wire), None
    if method == "zeroone":
        return mt.ZeroOneAdam(model.parameters(), lr=args.lr, var_freeze_step=args.var_freeze,
                              local_step_scaler=args.local_scaler, local_step_clipper=args.local_clipper), None
    adam = torch.optim.Adam(model.parameters(), lr=args.lr)
    EF = compression.ErrorFeedback
    inner = {"adam": None, "topk": lambda: Counting(EF(compression.get("topk", ratio=0.01))),
             "sign": lambda: Counting(EF(compression.get("sign"))),
             "powersgd": lambda: EF(compression.get("powersgd", rank=4))}[method]
    counting = inner() if inner is not None else None
    return mt.DistributedOptimizer(adam, model.named_parameters(), compressor=counting), counting


def traffic(method: str, optimizer: Any, counting: Any, model: torch.nn.Module, steps: int) -> float:
    """Gradient bytes this rank sent over the run."""
    comm, size = mpicoll.default_comm(), mpicoll.size()
    nbytes = sum(p.numel() * 4 for p in model.parameters())
    if method in ("onebit", "onebitbf16", "zeroone"):
        return optimizer.traffic_bytes
    if method == "adam":
        return steps * dense_sent_bytes(nbytes, size)
    if method == "powersgd":  # analytic: P (n x r) and Q (m x r) per matrix all-reduced; vectors exactly
        per_step = 0
        for p in model.parameters():
            if p.dim() >= 2:
                n, m = p.shape[0], p[0].numel()
                per_step += 4 * 4 * (n + m) if min(n, m) > 4 else 4 * p.numel()
            else:
                per_step += 4 * p.numel()
        return steps * dense_sent_bytes(per_step, size)
    flat = np.zeros(nbytes // 4, dtype=np.float32)  # one bucket (25 MiB fusion buffer)
    path = choose_path(counting, flat, comm)
    return compressed_sent_bytes(path, counting.take(), "optimizer-bucket0", comm.rank, size)


def train(method: str, args: argparse.Namespace, codes: np.ndarray, split: int) -> dict:
    rank, size = mpicoll.rank(), mpicoll.size()
    torch.manual_seed(args.seed)
    model = CharLSTM(hidden=args.hidden)
    mt.broadcast_parameters(model, root=0)
    optimizer, counting = make_optimizer(method, model, args)
    inner = getattr(optimizer, "optimizer", optimizer)
    schedule = torch.optim.lr_scheduler.LambdaLR(inner, lambda s: min(1.0, (s + 1) / args.lr_warmup))
    val_starts = np.random.default_rng(12345).integers(split, len(codes) - args.seq - 1, args.val_windows)
    val_x, val_y = windows(codes, val_starts, args.seq)
    per_rank = args.batch // size
    curve, start, elapsed = [], time.perf_counter(), 0.0
    for step in range(args.steps):
        began = time.perf_counter()
        starts = np.random.default_rng([args.seed, step]).integers(0, split - args.seq - 1, per_rank * size)
        x, y = windows(codes, starts[rank * per_rank: (rank + 1) * per_rank], args.seq)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1)).backward()
        optimizer.step()
        schedule.step()
        elapsed += time.perf_counter() - began  # training only: for time to loss
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            curve.append((step + 1, validation_loss(model, val_x, val_y), elapsed))
    sent = traffic(method, optimizer, counting, model, args.steps)
    onebit = method in ("onebit", "onebitbf16")
    return {"method": method, "ranks": size, "steps": args.steps, "freeze_step": args.freeze if onebit else None,
            "sign_block": args.sign_block if onebit else None, "validation_loss": curve[-1][1], "curve": curve,
            "traffic_bytes": sent, "synchronized": getattr(optimizer, "synchronized", True),
            "zeroone": {"var_freeze_step": args.var_freeze, "local_step_scaler": args.local_scaler,
                        "local_step_clipper": args.local_clipper} if method == "zeroone" else None,
            "parameters": sum(p.numel() for p in model.parameters()), "seconds": time.perf_counter() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="adam,onebit,topk,sign,powersgd")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--freeze", type=int, default=60, help="OneBitAdam's warm-up steps")
    parser.add_argument("--sign-block", type=int, default=256, help="OneBitAdam: one scale per this many "
                        "elements (0: one per chunk)")
    parser.add_argument("--var-freeze", type=int, default=60, help="ZeroOneAdam's var_freeze_step")
    parser.add_argument("--local-scaler", type=int, default=40, help="ZeroOneAdam's local_step_scaler")
    parser.add_argument("--local-clipper", type=int, default=8, help="ZeroOneAdam's local_step_clipper")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--lr-warmup", type=int, default=20, help="linear lr warm-up steps (LambdaLR)")
    parser.add_argument("--hidden", type=int, default=256, help="LSTM width (256: 0.37 M parameters)")
    parser.add_argument("--batch", type=int, default=32, help="global batch of windows")
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus-bytes", type=int, default=2_000_000)
    parser.add_argument("--val-windows", type=int, default=128)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--json", help="append results as JSON lines (rank 0)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    codes = corpus(args.corpus_bytes)
    split = int(0.9 * len(codes))
    results = []
    for method in args.methods.split(","):
        result = train(method.strip(), args, codes, split)
        results.append(result)
        if mpicoll.rank() == 0:
            sys.stdout.write(f"{result['method']:>8}: validation loss {result['validation_loss']:.4f} nats/char, "
                             f"sent {result['traffic_bytes'] / 2**20:.2f} MiB ({result['seconds']:.0f} s)\n")
            sys.stdout.flush()
            if args.json:
                with open(args.json, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(result) + "\n")
    if mpicoll.rank() == 0 and results[0]["method"] == "adam":
        base = results[0]
        for r in results[1:]:
            change = 100 * (r["validation_loss"] / base["validation_loss"] - 1)
            sys.stdout.write(f"# {r['method']:>8}: loss {change:+.2f}% "
                             f"vs adam, traffic {base['traffic_bytes'] / max(r['traffic_bytes'], 1):.1f}x less\n")
    return 0 if all(math.isfinite(r["validation_loss"]) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
