"""Which compressed all-reduce path runs: the aggregation layer's one home of ``auto`` and of the
paths each compressor kind may take.

==========  ===========================================  =================================
kind        algorithms                                   auto
==========  ===========================================  =================================
summable    ring, tree, recursive_doubling,              the all-reduce table's choice for
            rabenseifner (on the wire section)           the wire size
sparse      sparse_allgather, sparse_rd (SparCML)        sparse_allgather up to 4 ranks,
                                                         sparse_rd beyond
quantized   two_phase (compressed reduce-scatter +       allgather_decode on 1-2 ranks and
            compressed allgather), allgather_decode      for small payloads, else two_phase
            (single pass: every payload decoded and      (:func:`~mpicoll.model.rules.prefer_single_pass`)
            summed locally in rank order)
lowrank     powersgd (all-reduce P, then Q; hierarchical  powersgd
            sums across hosts), two_phase, hierarchical
any         two_phase, allgather_decode; hierarchical    hierarchical across hosts
            (exact sums inside each host, the path       (:func:`mpicoll.collectives.internal.across_hosts`),
            above between hosts)                         except for lowrank
==========  ===========================================  =================================

Other combinations (a dense algorithm with a sparse compressor, say) raise
:class:`~mpicoll.errors.UnsupportedError`. GPU (CuPy) arrays run on the GPU on the dense
algorithms; every other path runs them in host memory (:func:`runs_on_host`: copied there and
back, the codec on the CPU, with a warning once per path). The dense algorithms and the hosts rule themselves
come from the collectives' own home of ``auto`` (:mod:`mpicoll.collectives.auto`, through
:mod:`mpicoll.collectives.internal`).
"""

from __future__ import annotations

from typing import Any

from ..backend import is_cupy
from ..collectives.internal import OWN_FLAT, across_hosts, algorithm_names, choose_for
from ..compression import Compressor
from ..errors import UnsupportedError, accepted
from ..model.rules import prefer_single_pass, sparse_path
from ..transport import Comm
from .path import Parts

ALLOWED = {
    "summable": (*OWN_FLAT, "two_phase", "allgather_decode", "hierarchical"),
    "sparse": ("sparse_allgather", "sparse_rd", "two_phase", "allgather_decode", "hierarchical"),
    "quantized": ("two_phase", "allgather_decode", "hierarchical"),
    "lowrank": ("powersgd", "two_phase", "hierarchical"),
}
"""The paths that can carry each compressor kind's payloads."""

def summable_algorithm(nbytes: int, comm: Comm) -> str:
    """The dense algorithm a summable payload section of ``nbytes`` is reduced with on ``comm``:
    the all-reduce table's choice among mpicoll's own flat algorithms (else ``ring``)."""
    return choose_for("allreduce", nbytes, comm, own=True, flat=True)


def choose_path(compressor: Compressor, x: Any, comm: Comm) -> str:
    """The flat path ``auto`` takes for ``compressor`` on ``comm`` (no hierarchy)."""
    kind = compressor.kind
    if kind == "sparse":
        return sparse_path(comm.size)
    if kind == "quantized":
        payload_bytes = compressor.payload_nbytes(x)
        payload_bytes = x.nbytes if payload_bytes is None else payload_bytes
        return "allgather_decode" if prefer_single_pass(payload_bytes, comm.size) else "two_phase"
    if kind == "lowrank":
        return "powersgd"
    return summable_algorithm(x.nbytes, comm)


def resolve(compressor: Compressor, algorithm: str, x: Any, comm: Comm, parts: Parts) -> str:
    """The path ``compressed_allreduce`` runs (``auto`` resolved), checked against the compressor's
    kind, the device and ``parts``; raises :class:`UnsupportedError` for a path that cannot work."""
    kind = compressor.kind
    if kind not in ALLOWED:
        raise UnsupportedError(f"compressed_allreduce: compressor {compressor.name!r} has kind {kind!r}; "
                               f"accepted kinds: {accepted(list(ALLOWED))}")
    if algorithm == "auto":  # powersgd's own small sums follow the hosts: it stays flat here
        name = "hierarchical" if across_hosts(comm) and kind != "lowrank" else choose_path(compressor, x, comm)
    else:
        name = algorithm
    if name not in algorithm_names("compressed_allreduce"):
        raise UnsupportedError(f"compressed_allreduce: unknown algorithm {name!r}; accepted: "
                               f"{accepted([*algorithm_names('compressed_allreduce'), 'auto'])}")
    if name not in ALLOWED[kind]:
        raise UnsupportedError(f"compressed_allreduce: algorithm {name!r} cannot carry {kind} payloads of "
                               f"{compressor.name!r}; for {kind} compressors use {accepted([*ALLOWED[kind], 'auto'])}")
    if kind == "lowrank" and parts is not None and name != "powersgd":
        raise UnsupportedError(f"compressed_allreduce: {name!r} cuts the array into chunks across the packed "
                               f"tensors, so it cannot use parts=; use algorithm='powersgd' (or 'auto', which "
                               f"picks it and sums P and Q hierarchically across hosts)")
    return name


def runs_on_host(name: str, x: Any) -> bool:
    """Whether path ``name`` must run ``x`` (a GPU array) in host memory: only the dense algorithms
    carry GPU arrays themselves (summable payloads: fp16, bf16, randomk, none)."""
    return is_cupy(x) and name not in OWN_FLAT
