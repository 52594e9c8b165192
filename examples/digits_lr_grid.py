"""Does compressed momentum SGD keep accuracy at the learning rate that suits uncompressed training?

The digits MLP (64-256-256-10) of ``train_digits.py``, SGD momentum 0.9, cosine schedule over
``--epochs``, global batch 64, trained once per compression method at one learning rate and seed
(all methods inside one MPI launch)::

    mpiexec -n 4 python -m mpi4py examples/digits_lr_grid.py --lr 0.1 --seed 0 --json out.json

Methods (``--methods``, comma-separated):

- ``none``, ``fp16``, ``topk`` (1% + error feedback), ``sign`` (+ error feedback), ``powersgd``
  (rank 4 + error feedback): :class:`mpicoll.torch.DistributedOptimizer` around
  ``torch.optim.SGD`` with its default ``momentum_correction="auto"``: ``topk`` and ``sign`` are
  momentum-corrected (error feedback on each rank's velocity), the others are not (error feedback
  on the *gradient* for PowerSGD);
- ``topkgrad``, ``signgrad``: the same with ``momentum_correction=False`` (error feedback on the
  gradient: what ``topk`` and ``sign`` were before the correction existed); ``topkmask``:
  ``topk`` momentum-corrected with DGC's momentum factor masking (``momentum_masking=True``);
- ``dgc1``, ``dgc01`` (top-k 1% / 0.1%, sparsity warm-up over the first 4 epochs), ``dgcsign``
  (sign): :class:`mpicoll.torch.DGC`, error feedback on the momentum-corrected *velocity*;
- ``adam`` (uncompressed ``torch.optim.Adam`` in :class:`mpicoll.torch.DistributedOptimizer`) and
  ``onebit`` (:class:`mpicoll.torch.OneBitAdam`: Adam for the first ``--freeze-epochs``, then
  1-bit momentum), ``onebitbf16`` (the same, its warm-up's gradients sent as bfloat16:
  ``warmup_compressor=get("bf16")``), ``zeroone`` (:class:`mpicoll.torch.ZeroOneAdam`, its
  variance stage as long): all at ``--adam-lr`` (``--lr`` is SGD's), with the same cosine schedule.

Rank 0 prints one line per method and writes the final test accuracies (``--json``). A run whose
parameters become non-finite stops early and is reported as diverged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from train_digits import accuracy, data, mlp

import mpicoll
import mpicoll.torch as mt
from mpicoll import compression

EF = compression.ErrorFeedback
WRAPPED = {"none": lambda: None, "fp16": lambda: compression.get("fp16"),
           "topk": lambda: EF(compression.get("topk", ratio=0.01)), "sign": lambda: EF(compression.get("sign")),
           "powersgd": lambda: EF(compression.get("powersgd", rank=4))}
#: the methods trained at ``--adam-lr``
ADAM_METHODS = ("adam", "onebit", "onebitbf16", "zeroone")


def optimizer_for(method: str, model: torch.nn.Module, steps_per_epoch: int,
                  args: argparse.Namespace) -> torch.optim.Optimizer:
    """The optimizer of one method (momentum 0.9 for the SGD ones, at ``args.lr``; the Adam ones
    at ``args.adam_lr``)."""
    lr = args.lr
    if method in ADAM_METHODS:
        if method == "adam":
            return mt.DistributedOptimizer(torch.optim.Adam(model.parameters(), lr=args.adam_lr),
                                           model.named_parameters())
        freeze = max(1, round(args.freeze_epochs * steps_per_epoch))
        if method == "zeroone":  # the variance stage as long as onebit's warm-up; the rest 0/1 Adam's defaults
            return mt.ZeroOneAdam(model.parameters(), lr=args.adam_lr, var_freeze_step=freeze)
        wire = compression.get("bf16") if method == "onebitbf16" else None
        return mt.OneBitAdam(model.parameters(), lr=args.adam_lr, freeze_step=freeze, warmup_compressor=wire)
    base, correction = (method[:-4], False) if method in ("topkgrad", "signgrad") else (method, "auto")
    base, masking = (base[:-4], True) if base == "topkmask" else (base, False)
    if base in WRAPPED:
        sgd = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        return mt.DistributedOptimizer(sgd, model.named_parameters(), compressor=WRAPPED[base](),
                                       momentum_correction=correction, momentum_masking=masking)
    warmup = 4 * steps_per_epoch
    if method == "dgc1":
        return mt.DGC(model.parameters(), lr=lr, momentum=0.9, compressor=compression.get("topk", ratio=0.01),
                      warmup_steps=warmup)
    if method == "dgc01":
        return mt.DGC(model.parameters(), lr=lr, momentum=0.9, compressor=compression.get("topk", ratio=0.001),
                      warmup_steps=warmup)
    if method == "dgcsign":
        return mt.DGC(model.parameters(), lr=lr, momentum=0.9, compressor=compression.get("sign"))
    raise SystemExit(f"unknown method {method!r}")


def train(method: str, args: argparse.Namespace) -> dict:
    """One run; its final test accuracy (or divergence)."""
    rank, size = mpicoll.rank(), mpicoll.size()
    x_train, y_train, x_test, y_test = data()
    model = mlp(args.hidden, seed=args.seed)
    mt.broadcast_parameters(model, root=0)
    per_rank = args.batch // size
    steps_per_epoch = len(x_train) // (per_rank * size)
    optimizer = optimizer_for(method, model, steps_per_epoch, args)
    inner = getattr(optimizer, "optimizer", optimizer)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(inner, args.epochs)
    start, history, diverged, train_seconds, elapsed = time.perf_counter(), [], False, [], 0.0
    for epoch in range(args.epochs):
        began = time.perf_counter()
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(1000 * args.seed + epoch))
        for s in range(steps_per_epoch):
            batch = order[s * per_rank * size: (s + 1) * per_rank * size]
            mine = batch[rank * per_rank: (rank + 1) * per_rank]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x_train[mine]), y_train[mine]).backward()
            optimizer.step()
        schedule.step()
        elapsed += time.perf_counter() - began
        train_seconds.append(elapsed)  # training only, evaluation excluded: for time to accuracy
        history.append(accuracy(model, x_test, y_test))
        # parameters are identical on every rank, so every rank takes the same decision
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            diverged = True
            break
    return {"method": method, "lr": args.adam_lr if method in ADAM_METHODS else args.lr,
            "freeze_epochs": args.freeze_epochs if method in ADAM_METHODS[1:] else None,
            "seed": args.seed, "ranks": size, "epochs": args.epochs,
            "final_accuracy": history[-1], "best_accuracy": max(history), "diverged": diverged,
            "accuracy_per_epoch": history, "train_seconds_per_epoch": train_seconds,
            "traffic_bytes": getattr(optimizer, "traffic_bytes", None),
            "seconds": time.perf_counter() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="none,fp16,topk,sign,dgc1,dgc01,dgcsign,powersgd")
    parser.add_argument("--lr", type=float, default=0.1, help="the SGD methods' learning rate")
    parser.add_argument("--adam-lr", type=float, default=1e-3, help="adam's, onebit's and zeroone's learning rate")
    parser.add_argument("--freeze-epochs", type=float, default=1.0,
                        help="onebit, zeroone: epochs of uncompressed Adam (variance updates) before the freeze")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64, help="global batch size (split over the ranks)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--json", help="append the results here as JSON lines (rank 0)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for method in args.methods.split(","):
        result = train(method.strip(), args)
        if mpicoll.rank() == 0:
            flag = " DIVERGED" if result["diverged"] else ""
            sys.stdout.write(f"lr {result['lr']} seed {args.seed} {result['method']:>8}: "
                             f"final {100 * result['final_accuracy']:.2f}% best {100 * result['best_accuracy']:.2f}%"
                             f"{flag} ({result['seconds']:.0f} s)\n")
            sys.stdout.flush()
            if args.json:
                with open(args.json, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
