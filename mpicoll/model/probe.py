"""Measure a :class:`~.machine.Machine` under the job's own launcher, in seconds.

Collective over ``comm`` (every rank calls :func:`probe`):

- **links**: ping-pongs between two ranks of one host (``intra``, when a host holds two) and
  between rank 0 and the first rank of another host (``inter``, when there are several hosts);
  half the round trip at 8 B, 1 MiB and 4 MiB; ``alpha`` is the smallest message's time,
  ``beta`` the slope between the two large ones (both past the burst a shaped link lets through
  at line rate, which shortens them alike). The raw points are kept in the JSON's ``pings``. Other ranks
  wait at a barrier, so a pair has its link to itself.
- **gamma**: ``np.add`` of two arrays in place; **flops**: the thin products PowerSGD runs;
- **codecs**: compress and decompress of a Gaussian array with the kernels a user gets by
  default, and the payload's size over the input's; these and gamma at two array sizes, 4 and
  16 MiB (speeds change once arrays outgrow a core's cache: :meth:`.Machine.seconds`);
- **native**: ``mpicoll.allreduce(algorithm="native")`` at a few sizes (the MPI library's
  algorithms are not modelled, only observed on this rank count), up to 16 MiB where that fits
  :data:`NATIVE_BUDGET`: an MPI library may change algorithm past 4 MiB, and the curve is
  extrapolated past its largest point.

The slowest rank's figures are kept (``MAX`` over ranks), and rank 0's decision-relevant result is
broadcast, so every rank returns the same :class:`Machine`.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..collectives import allreduce
from ..compression import get as get_compressor
from ..kernels.threads import blas_share
from ..transport import Comm, as_comm
from .costs import Layout
from .machine import LARGE_BYTES, SMALL_BYTES, CodecRates, Link, Machine

#: ping-pong sizes: the largest must be well past any burst a link allows (a token bucket's, a
#: switch's buffer) or the fitted bandwidth is the burst's, not the link's
PING_SIZES = (8, 1 << 20, 4 << 20)
NATIVE_SIZES = (4 << 10, 64 << 10, 1 << 20, 4 << 20, 16 << 20)
#: seconds the probe may spend observing one ``MPI_Allreduce`` size, judged from the size before
#: it scaled by bytes: a larger size gets fewer samples, or none (then the curve is extrapolated
#: from the last size observed). On 4 hosts at 200 Mbit/s MPICH took 334 ms at 4 MiB and 2.08 s
#: at 16 MiB, 1.6x slower per byte: extrapolated, the model read 1.09 s (bench/RESULTS.md, issue 17).
NATIVE_BUDGET = 5.0
CODECS = {"fp16": {}, "bf16": {}, "int8": {}, "sign": {}, "qsgd": {}, "topk": {"ratio": 0.01},
          "randomk": {"ratio": 0.01}, "powersgd": {"rank": 4}}
SETTLE = 0.15  # seconds of untimed calls before a codec is timed (see _median_seconds)
#: seconds of calls per sample of a local rate (codecs, gamma, products). Where ranks share a core
#: (more ranks than cores), each gets its share of it over any stretch longer than the scheduler's
#: slice (a few ms), but one call of a few ms often runs inside a single slice at the whole core's
#: speed: timed call by call, 6 ranks on 2 cores read sign's compress at 2.8 GB/s, as a rank with a
#: core of its own does, and the compute-bound compressed paths ran 25-57% slower than predicted
#: there (bench/RESULTS.md, issue 17). A collective's compute runs on every rank at once, at
#: the share: what a window of calls measures. With a core per rank the two agree.
WINDOW = 0.03


def _median_seconds(fn: Callable[[], Any], repeats: int, settle: float = 0.0, window: float = 0.0,
                    sync: Callable[[], Any] | None = None) -> float:
    """The median of ``repeats`` samples of the seconds one call of ``fn`` takes, after one untimed
    call (connections, compilation, first touch) and then more untimed calls for up to ``settle``
    seconds (at most 20): a codec's first calls on fresh 4 MiB arrays run up to 2x slower than its
    steady state (top-k: 11 ms falling to 4.7 over 15 calls, as the allocator stops mapping fresh
    pages), and the steady state is what a training loop gets.

    Each sample is one call, or with ``window`` the mean over as many calls as take at least
    ``window`` seconds: see :data:`WINDOW`. ``sync`` (a barrier), when given, runs untimed before
    each sample, so that every rank's sample starts at the same moment."""
    fn()
    start = time.perf_counter()
    for _ in range(20):
        if time.perf_counter() - start >= settle:
            break
        fn()
    samples = []
    for _ in range(repeats):
        if sync is not None:
            sync()
        calls, t0 = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= window:
                break
        samples.append(elapsed / calls)
    return statistics.median(samples)


def _fit_link(points: Sequence[tuple[int, float]]) -> Link:
    """``alpha`` from the smallest message; ``beta`` from the slope between the two largest, which
    a link's burst allowance (a token bucket's, a switch buffer's) shortens alike, so the slope is
    the sustained rate (through 0 it would read a 200 Mbit/s link with a 512 KiB burst as 217);
    ``burst``, the bytes that shortening is worth: how far the second largest message's time falls
    below ``alpha`` plus its bytes at that rate (0 to its size; about 0 on an unshaped link, 117-126
    KiB on the bed's 128 KiB ``tbf`` bucket)."""
    ordered = sorted(points)
    alpha = max(ordered[0][1], 0.0)
    (s1, t1), (s2, t2) = ordered[-2], ordered[-1]
    beta = max((t2 - t1) / (s2 - s1) if s2 > s1 and t2 > t1 else (t2 - alpha) / max(s2 - ordered[0][0], 1), 1e-15)
    burst = min(max(s1 - (t1 - alpha) / beta, 0.0), float(s1)) if len(ordered) > 2 else 0.0
    return Link(alpha, beta, burst)


def _pingpong(comm: Comm, a: int, b: int, sizes: Sequence[int], repeats: int) -> list[tuple[int, float]] | None:
    """Half round trips between ranks ``a`` and ``b`` (measured on ``a``; broadcast from it)."""
    mpi = comm.mpi
    points: list[tuple[int, float]] = []
    for size in sizes:
        buf = np.zeros(max(size, 1), dtype=np.uint8)
        mpi.Barrier()
        if comm.rank in (a, b):
            peer = b if comm.rank == a else a

            def once(buf: np.ndarray = buf, peer: int = peer) -> None:
                if comm.rank == a:
                    mpi.Send(buf, dest=peer, tag=77)
                    mpi.Recv(buf, source=peer, tag=77)
                else:
                    mpi.Recv(buf, source=peer, tag=77)
                    mpi.Send(buf, dest=peer, tag=77)

            seconds = _median_seconds(once, repeats if size < (256 << 10) else max(3, repeats // 3)) / 2
            points.append((size, seconds))
    mpi.Barrier()
    return mpi.bcast(points if comm.rank == a else None, root=a)


def _pairs(hosts: Sequence[int]) -> dict[str, tuple[int, int]]:
    """Two ranks on one host (``intra``) and two on different hosts (``inter``), where they exist."""
    pairs: dict[str, tuple[int, int]] = {}
    first: dict[int, int] = {}
    for rank, host in enumerate(hosts):
        if host in first and "intra" not in pairs:
            pairs["intra"] = (first[host], rank)
        first.setdefault(host, rank)
    others = [r for r, h in enumerate(hosts) if h != hosts[0]]
    if others:
        pairs["inter"] = (0, others[0])
    return pairs


def _flops(repeats: int) -> float:
    """The thin products PowerSGD runs, in floating-point operations per second."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1024, 1024)).astype(np.float32)
    q = rng.standard_normal((1024, 4)).astype(np.float32)
    with blas_share():  # as PowerSGD's products run (kernels.threads): this rank's share of the cores
        return 2 * 1024 * 1024 * 4 / _median_seconds(lambda: a.T @ (a @ q), repeats, window=WINDOW) * 2


def _local_rates(codecs: dict[str, dict[str, Any]], repeats: int, nbytes: int,
                 sync: Callable[[], Any] = lambda: None) -> tuple[float, dict[str, CodecRates]]:
    """gamma and every codec's rates, timed on arrays of ``nbytes``; ``sync`` (a barrier) runs
    before each timing, so that every rank times the same operation at the same moment, as a
    collective runs it (two ranks sharing a core then also share its cache). Its own effect was
    not separated from this VM's launch-to-launch noise: sign's 16 MiB decode read 5.9 GB/s
    without it and 7.0 with it, in two launches (bench/RESULTS.md, issue 17)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(nbytes // 4).astype(np.float32)
    y = x.copy()
    sync()
    gamma = _median_seconds(lambda: np.add(y, x, out=y), repeats, window=WINDOW) / x.nbytes
    rates: dict[str, CodecRates] = {}
    for name, params in codecs.items():
        compressor = get_compressor(name, **params)
        # PowerSGD's one-rank compress and decompress are its products (M Q, M^T P, P Q^T) and the
        # Gram-Schmidt, timed as its path runs them (BLAS at this rank's share of the cores): they
        # price its compute per byte like any codec's
        with blas_share() if compressor.kind == "lowrank" else contextlib.nullcontext():
            payload, ctx = compressor.compress(x, key=("probe", name))
            sync()
            t_c = _median_seconds(lambda c=compressor, n=name: c.compress(x, key=("probe", n)), repeats, SETTLE,
                                  WINDOW)
            sync()
            t_d = _median_seconds(lambda c=compressor, p=payload, k=ctx: c.decompress(p, k), repeats, SETTLE,
                                  WINDOW)
        rates[name] = codec_rates_of(compressor, params, payload, x.nbytes, t_c, t_d)
    return gamma, rates


def codec_rates_of(compressor: Any, params: dict[str, Any], payload: Any, nbytes: int, compress_seconds: float,
                   decode_seconds: float) -> CodecRates:
    """One codec's :class:`CodecRates` from a timed compress and decode of ``nbytes`` (here on the
    host; ``gpu_check`` times the same on a GPU): the wire ratio read off ``payload``, 16-bit
    summable payloads added as float32 (``widen``), PowerSGD's rank."""
    ratio = _payload_bytes(payload) / nbytes
    widen = 2.0 if compressor.kind == "summable" and 0.4 < ratio < 0.6 else 1.0
    rank = int(params.get("rank", 0)) if compressor.kind == "lowrank" else 0
    return CodecRates(compressor.kind, ratio, nbytes / compress_seconds, nbytes / decode_seconds, widen=widen,
                      rank=rank)


def _payload_bytes(payload: Any) -> int:
    if isinstance(payload, np.ndarray):
        return int(payload.nbytes)
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return len(payload)
    if isinstance(payload, (tuple, list)):
        return sum(_payload_bytes(p) for p in payload)
    return int(getattr(payload, "nbytes", 0))


def _observe_native(c: Comm, sizes: Sequence[int], repeats: int,
                    budget: float = NATIVE_BUDGET) -> list[tuple[float, float]]:
    """``MPI_Allreduce``'s ``(bytes, seconds)`` at ``sizes`` in increasing order (the slowest rank's
    median), each within ``budget`` seconds as the size before it predicts: a size whose calls
    (one untimed, then the samples) would pass it gets fewer samples, and is skipped, with every
    larger one, when even one sample would. The times are ``MAX`` over ranks, so every rank makes
    the same choice. Each sample starts at a barrier, as model-check's calls do (and a program's
    calls between stretches of compute): back to back, MPICH's 4 MiB calls over the bed's
    50 Mbit/s link read 810-1021 ms in four probes against 711-776 ms in model-check; a direct
    comparison in one job was not conclusive (809 against 705 ms, then 736 against 748)."""
    from mpi4py import MPI

    points: list[tuple[float, float]] = []
    for size in sorted(sizes):
        samples = repeats
        if points:
            expected = points[-1][1] * size / points[-1][0]
            samples = min(repeats, int(budget / expected) - 1) if expected > 0 else repeats
            if samples < 1:
                break
        x = np.ones(size // 4, dtype=np.float32)
        out = np.empty_like(x)
        # each sample from a common start, as a program's calls (and model-check's)
        t = _median_seconds(lambda x=x, out=out: allreduce(x, algorithm="native", comm=c, out=out), samples,
                            sync=c.mpi.Barrier)
        points.append((float(size), c.mpi.allreduce(t, op=MPI.MAX)))
    return points


def probe(comm: Any = None, *, codecs: dict[str, dict[str, Any]] | None = None, repeats: int = 5,
          native_sizes: Sequence[int] = NATIVE_SIZES) -> Machine:
    """Measure this job's machine (collective over ``comm``); every rank returns the same model.

    Args:
        comm: an :class:`mpicoll.Comm`, an mpi4py communicator, or ``None`` for the default.
        codecs: compressor names and parameters to measure (default :data:`CODECS`).
        repeats: samples per measurement (the median is kept).
        native_sizes: sizes (bytes) at which ``MPI_Allreduce`` is observed; empty to skip.
    """
    from mpi4py import MPI

    c = as_comm(comm)
    links, pings = {}, {}
    for name, (a, b) in _pairs(c.hosts).items():
        pings[name] = _pingpong(c, a, b, PING_SIZES, repeats)
        links[name] = _fit_link(pings[name])
    if not links:  # one rank: nothing to measure; a link that costs nothing
        links["intra"] = Link(0.0, 1e-15)
    wanted = codecs if codecs is not None else CODECS
    # local speeds at two array sizes (see Machine.seconds): the slowest rank's
    gamma, rates = _local_rates(wanted, repeats, SMALL_BYTES, c.mpi.Barrier)
    gamma_large, large = _local_rates(wanted, repeats, LARGE_BYTES, c.mpi.Barrier)
    c.mpi.Barrier()
    gamma, gamma_large = (c.mpi.allreduce(g, op=MPI.MAX) for g in (gamma, gamma_large))
    flops = c.mpi.allreduce(_flops(repeats), op=MPI.MIN)
    slowest: dict[str, CodecRates] = {}
    for name, r in rates.items():  # the slowest rank's speeds; rank 0's ratio
        comp, dec, comp_large, dec_large = (c.mpi.allreduce(v, op=MPI.MIN) for v in (
            r.compress_Bps, r.decode_Bps, large[name].compress_Bps, large[name].decode_Bps))
        slowest[name] = CodecRates(r.kind, r.ratio, comp, dec, r.widen, r.rank, comp_large, dec_large)
    native = _observe_native(c, native_sizes, repeats) if c.size > 1 else []
    layout = Layout.of(c.hosts)
    machine = Machine(links, gamma, flops, slowest, {c.size: native} if native else {},
                      {"ranks": c.size, "hosts": layout.hosts, "per_host": layout.per_host,
                       "pings": pings}, gamma_large, (SMALL_BYTES, LARGE_BYTES))
    return Machine.from_json(c.mpi.bcast(machine.to_json(), root=0))  # one model, bit for bit, on every rank
