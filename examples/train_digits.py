"""Data-parallel PyTorch training with mpicoll: an MLP on scikit-learn's handwritten digits.

The digits (8x8 images, 1797 samples) ship inside scikit-learn, so nothing is downloaded. Every
rank takes its slice of each global batch; gradients are averaged across ranks by mpicoll,
either without DDP (``--mode optimizer``: :class:`mpicoll.torch.DistributedOptimizer`) or
through DDP with mpicoll's communication hook (``--mode ddp``). Run::

    mpiexec -n 4 python -m mpicoll.run examples/train_digits.py --compressor topk --epochs 30

``--compressor`` is ``none``, ``fp16``, ``topk`` (1%, error feedback), ``sign`` (error
feedback) or ``powersgd`` (rank 4, error feedback), or a comma-separated list to train one model
per compressor in the same job. Rank 0 prints test accuracy per epoch; ``--json`` writes the
history. At the end every rank checks that all ranks hold bit-identical parameters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import mpicoll
import mpicoll.torch as mt
from mpicoll import compression


def compressor_named(name: str) -> compression.Compressor | None:
    """The compressors of the accuracy comparison."""
    return {"none": lambda: None,
            "fp16": lambda: compression.get("fp16"),
            "topk": lambda: compression.ErrorFeedback(compression.get("topk", ratio=0.01)),
            "sign": lambda: compression.ErrorFeedback(compression.get("sign")),
            "powersgd": lambda: compression.ErrorFeedback(compression.get("powersgd", rank=4))}[name]()


def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train and test split of the digits, pixels scaled to [0, 1]; the same on every rank."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.2, random_state=0, stratify=y)
    as_x, as_y = (lambda a: torch.tensor(a, dtype=torch.float32)), (lambda a: torch.tensor(a, dtype=torch.int64))
    return as_x(x_train), as_y(y_train), as_x(x_test), as_y(y_test)


def mlp(hidden: int, seed: int) -> torch.nn.Module:
    """64 -> hidden -> hidden -> 10, ReLU; ``seed`` makes the initial weights (broadcast anyway)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                               torch.nn.ReLU(), torch.nn.Linear(hidden, 10))


def batches(n: int, global_batch: int, epoch: int) -> list[torch.Tensor]:
    """Global batches of sample indices (full ones only), shuffled per epoch identically on every rank."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1000 + epoch))
    return [order[i: i + global_batch] for i in range(0, n - global_batch + 1, global_batch)]


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for t in model.state_dict().values():
        digest.update(t.detach().numpy().tobytes())
    return digest.hexdigest()


def train(args: argparse.Namespace, name: str) -> dict:
    """Train one model with compressor ``name``; its history."""
    rank, size = mpicoll.rank(), mpicoll.size()
    x_train, y_train, x_test, y_test = data()
    model = mlp(args.hidden, seed=rank)  # different on purpose: broadcast_parameters makes them equal
    mt.broadcast_parameters(model, root=0)
    compressor = compressor_named(name)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    if args.mode == "ddp":
        mt.init_process_group()
        net = torch.nn.parallel.DistributedDataParallel(model)
        net.register_comm_hook(mt.HookState(compressor), mt.allreduce_hook)
    else:
        net = model
        optimizer = mt.DistributedOptimizer(optimizer, model.named_parameters(), compressor=compressor)
    mt.broadcast_optimizer_state(optimizer, root=0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs)  # either path: a torch Optimizer
    history = {"compressor": name, "mode": args.mode, "ranks": size, "epochs": [], "test_accuracy": [],
               "train_loss": [], "step_seconds": []}
    per_rank = args.batch // size
    for epoch in range(args.epochs):
        losses, start, steps = [], time.perf_counter(), 0
        for batch in batches(len(x_train), per_rank * size, epoch):
            mine = batch[rank * per_rank: (rank + 1) * per_rank]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x_train[mine]), y_train[mine])
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
            steps += 1
        schedule.step()
        history["step_seconds"].append((time.perf_counter() - start) / steps)
        history["epochs"].append(epoch + 1)
        history["train_loss"].append(float(np.mean(losses)))
        history["test_accuracy"].append(accuracy(model, x_test, y_test))
        if rank == 0 and not args.quiet:
            sys.stdout.write(f"{name:>5} epoch {epoch + 1:3d}  loss {history['train_loss'][-1]:.4f}  "
                             f"test accuracy {100 * history['test_accuracy'][-1]:.2f}%\n")
            sys.stdout.flush()
    prints = mpicoll.default_comm().mpi.allgather(fingerprint(model))
    history["identical_on_all_ranks"] = len(set(prints)) == 1
    if not history["identical_on_all_ranks"]:
        raise SystemExit(f"rank {rank}: parameters differ across ranks after training with {name}")
    return history


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compressor", default="none", help="none, fp16, topk, sign, or a comma-separated list")
    parser.add_argument("--mode", choices=("optimizer", "ddp"), default="optimizer")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64, help="global batch size (split over the ranks)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--json", help="write the histories here (rank 0)")
    parser.add_argument("--plot", metavar="PNG", help="plot test accuracy per epoch here (rank 0; matplotlib)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one rank per core: torch's own threads would fight the ranks
    histories = [train(args, name.strip()) for name in args.compressor.split(",")]
    if mpicoll.rank() == 0:
        for h in histories:
            sys.stdout.write(f"# {h['compressor']:>5}: final test accuracy {100 * h['test_accuracy'][-1]:.2f}%, "
                             f"{1000 * float(np.median(h['step_seconds'])):.2f} ms/step, identical on all ranks\n")
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(histories, fh, indent=1)
        if args.plot:
            plot(histories, args.plot)
    return 0


def plot(histories: list[dict], path: str) -> None:
    """Test accuracy per epoch, one line per compressor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for h in histories:
        ax.plot(h["epochs"], [100 * a for a in h["test_accuracy"]], marker=".", label=h["compressor"])
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(80, 100)
    ax.grid(alpha=0.3)
    ax.set_title(f"digits MLP, {histories[0]['ranks']} ranks, mode {histories[0]['mode']}")
    ax.legend(title="compressor")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
