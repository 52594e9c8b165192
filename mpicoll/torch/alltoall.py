"""gather, scatter and all-to-all of the mpicoll backend, all on :func:`mpicoll.alltoall` with counts.

Tensors travel as bytes (any dtype), with counts in bytes. gather is an all-to-all in which
only the root receives (every rank sends its tensor to the root alone), scatter one in which only
the root sends; ``all_to_all_single`` cuts dimension 0 into rows per rank (even, or by split
sizes) and ``all_to_all`` takes one tensor per rank, of any sizes (gloo wants them equal).
Received blocks are copied into the output tensors from a scratch buffer of the communicator the
job runs on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..backend import xp_of
from ..collectives import alltoall as _alltoall
from ..errors import ArgumentError
from ..transport import Comm
from .buffers import Buffer, bytes_of, for_bytes, nbytes
from .collectives import Prepared, collective, one_tensor, per_rank, unpack
from .tensors import as_array


def _exchange(send: Buffer, sendcounts: list[int], recvcounts: list[int],
              outputs: Sequence[torch.Tensor]) -> Prepared:
    """One :func:`mpicoll.alltoall` of bytes with counts; the received blocks go to ``outputs``."""
    array = send.array

    def job(c: Comm) -> list[torch.Tensor]:
        out = c.scratch.get("torch.exchange", sum(recvcounts), np.uint8, xp_of(array))
        _alltoall(array, sendcounts=sendcounts, recvcounts=recvcounts, comm=c, out=out)
        unpack(out, outputs)
        return list(outputs)

    return job, array


def _concat_bytes(tensors: Sequence[torch.Tensor]) -> Buffer:
    flat = torch.cat([bytes_of(t.detach().contiguous()) for t in tensors]) if tensors else \
        torch.empty(0, dtype=torch.uint8)
    return Buffer(flat, flat, as_array(flat))


@collective("gather", "alltoall")
def gather(comm: Comm, output_tensors: Sequence[Sequence[torch.Tensor]], input_tensors: Sequence[torch.Tensor],
           opts: Any) -> Prepared:
    """``gather`` to ``opts.rootRank``: the root sends nothing, receives every rank's bytes."""
    root, src = opts.rootRank, for_bytes(one_tensor(input_tensors, "gather"))
    outputs = per_rank(one_tensor(output_tensors, "gather"), comm.size, "gather") if comm.rank == root else []
    sendcounts = [src.array.size if r == root else 0 for r in range(comm.size)]
    recvcounts = [nbytes(o) for o in outputs] if comm.rank == root else [0] * comm.size
    return _exchange(src, sendcounts, recvcounts, outputs)


@collective("scatter", "alltoall")
def scatter(comm: Comm, output_tensors: Sequence[torch.Tensor], input_tensors: Sequence[Sequence[torch.Tensor]],
            opts: Any) -> Prepared:
    """``scatter`` from ``opts.rootRank``: tensor ``r`` of the root's list to rank ``r``."""
    root, output = opts.rootRank, one_tensor(output_tensors, "scatter")
    inputs = per_rank(one_tensor(input_tensors, "scatter"), comm.size, "scatter") if comm.rank == root else []
    sendcounts = [nbytes(t) for t in inputs] if comm.rank == root else [0] * comm.size
    recvcounts = [nbytes(output) if r == root else 0 for r in range(comm.size)]
    return _exchange(_concat_bytes(inputs), sendcounts, recvcounts, [output])


def _splits(tensor: torch.Tensor, splits: list[int], size: int, where: str) -> list[int]:
    """Byte counts per rank from split sizes in rows of dimension 0 (equal rows when empty)."""
    rows = tensor.shape[0] if tensor.dim() else 1
    if not splits:
        if rows % size:
            raise ArgumentError(f"{where}: dimension 0 ({rows}) is not divisible by the {size} ranks; pass split sizes")
        splits = [rows // size] * size
    if len(splits) != size or sum(splits) != rows or min(splits) < 0:
        raise ArgumentError(f"{where}: split sizes {splits} must be {size} non-negative row counts adding up to "
                            f"dimension 0 ({rows})")
    row_bytes = nbytes(tensor) // rows if rows else 0
    return [s * row_bytes for s in splits]


@collective("all_to_all_single", "alltoall")
def alltoall_single(comm: Comm, output: torch.Tensor, input: torch.Tensor, output_splits: list[int],
                    input_splits: list[int], opts: Any) -> Prepared:
    """``all_to_all_single``: rows of dimension 0, split evenly or by the given sizes."""
    if output.dtype != input.dtype:
        raise ArgumentError(f"all_to_all_single: output dtype {output.dtype} differs from input dtype {input.dtype}")
    sendcounts = _splits(input, input_splits, comm.size, "all_to_all_single")
    recvcounts = _splits(output, output_splits, comm.size, "all_to_all_single")
    src, out = for_bytes(input), for_bytes(output, copy_in=False)
    even = not input_splits and not output_splits and sendcounts == recvcounts

    def job(c: Comm) -> list[torch.Tensor]:
        if even:  # every rank knows every count: no count exchange
            _alltoall(src.array.reshape(c.size, -1), comm=c, out=out.array.reshape(c.size, -1))
        else:
            _alltoall(src.array, sendcounts=sendcounts, recvcounts=recvcounts, comm=c, out=out.array)
        out.finish()
        return [output]

    return job, src.array


@collective("all_to_all", "alltoall")
def alltoall_list(comm: Comm, output_tensors: Sequence[torch.Tensor], input_tensors: Sequence[torch.Tensor],
                  opts: Any) -> Prepared:
    """``all_to_all``: input ``j`` to rank ``j``, output ``j`` from rank ``j`` (any sizes)."""
    inputs = per_rank(input_tensors, comm.size, "all_to_all")
    outputs = per_rank(output_tensors, comm.size, "all_to_all")
    return _exchange(_concat_bytes(inputs), [nbytes(t) for t in inputs], [nbytes(t) for t in outputs], outputs)
