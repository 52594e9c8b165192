"""Data-parallel training in plain NumPy with mpicoll: a two-layer network on synthetic data.

Every rank holds a shard of the data, computes gradients on its minibatch, and averages them
across ranks with ``mpicoll.compressed_allreduce`` (top-k with error feedback by default),
then takes the same SGD step, so all ranks keep identical weights. Run::

    mpiexec -n 2 python -m mpicoll.run examples/train_numpy.py --epochs 10 --json history.json

The data are Gaussian clusters (no download); the script prints loss and accuracy per epoch on
rank 0 and checks at the end that every rank holds bit-identical weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

import numpy as np

import mpicoll
from mpicoll import compression


def make_data(n: int, features: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian clusters around fixed random centres; ``seed`` picks the points."""
    centres = np.random.default_rng(0).standard_normal((classes, features)) * 0.45
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = (centres[y] + rng.standard_normal((n, features))).astype(np.float32)
    return x, y


def forward(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hidden = np.maximum(x @ params["w1"] + params["b1"], 0)
    logits = hidden @ params["w2"] + params["b2"]
    return hidden, logits


def loss_and_grads(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """Cross-entropy loss and its gradients (mean over the minibatch)."""
    hidden, logits = forward(params, x)
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    loss = float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())
    d_logits = probs
    d_logits[np.arange(len(y)), y] -= 1
    d_logits /= len(y)
    d_hidden = (d_logits @ params["w2"].T) * (hidden > 0)
    grads = {"w2": hidden.T @ d_logits, "b2": d_logits.sum(0), "w1": x.T @ d_hidden, "b1": d_hidden.sum(0)}
    return loss, {k: v.astype(np.float32) for k, v in grads.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64, help="minibatch per rank")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--compressor", default="topk", help="any mpicoll compressor, or 'dense' for allreduce")
    parser.add_argument("--ratio", type=float, default=0.05, help="top-k / random-k ratio")
    parser.add_argument("--json", help="write the loss/accuracy history here (rank 0)")
    args = parser.parse_args(argv)
    rank, size = mpicoll.rank(), mpicoll.size()
    x, y = make_data(8192, 32, 10, seed=1)
    test_x, test_y = make_data(2048, 32, 10, seed=2)  # same centres, fresh points
    shard = slice(rank, None, size)
    x, y = x[shard], y[shard]
    rng = np.random.default_rng(1)  # the same initial weights on every rank
    params = {"w1": (rng.standard_normal((32, 64)) * 0.2).astype(np.float32), "b1": np.zeros(64, np.float32),
              "w2": (rng.standard_normal((64, 10)) * 0.2).astype(np.float32), "b2": np.zeros(10, np.float32)}
    codec = None
    if args.compressor != "dense":
        extra = {"ratio": args.ratio} if args.compressor in ("topk", "topk_approx", "randomk") else {}
        codec = compression.ErrorFeedback(compression.get(args.compressor, **extra))
    history = []
    order = np.random.default_rng(2 + rank)
    for epoch in range(args.epochs):
        perm = order.permutation(len(y))
        losses = []
        for start in range(0, len(y) - args.batch + 1, args.batch):
            batch = perm[start: start + args.batch]
            loss, grads = loss_and_grads(params, x[batch], y[batch])
            losses.append(loss)
            for name, grad in grads.items():
                if codec is None:
                    mean = mpicoll.allreduce(grad, "avg")
                else:
                    mean = mpicoll.compressed_allreduce(grad, codec, key=name)
                params[name] -= np.float32(args.lr) * mean
        accuracy = float((forward(params, test_x)[1].argmax(1) == test_y).mean())
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "test_accuracy": accuracy})
        if rank == 0:
            sys.stdout.write(f"epoch {epoch + 1:3d}  loss {history[-1]['loss']:.4f}  test accuracy {accuracy:.4f}\n")
            sys.stdout.flush()
    digest = hashlib.sha256(b"".join(p.tobytes() for p in params.values())).hexdigest()
    same = len(set(mpicoll.default_comm().mpi.allgather(digest))) == 1
    if rank == 0:
        sys.stdout.write(f"weights identical on all {size} ranks: {same}\n")
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump({"ranks": size, "compressor": args.compressor, "history": history, "identical": same}, fh)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
