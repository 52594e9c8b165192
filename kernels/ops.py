"""The kernel operations, declared once: each one's parameters and the argument checks every provider shares.

A provider (the NumPy reference, Numba CPU, Numba CUDA, CuPy) implements an operation by
decorating a function with :func:`implements`; the decorator checks that the function takes the
declared parameters, in the declared order, and puts the shared argument checks in front of it, so
no provider writes them again. :func:`collect` gathers a provider's implementations from its
modules into its ``OPS`` table and refuses a table with an operation missing.

What each operation computes (its exact, bitwise contract) is written once too, in
:mod:`.reference`. The checks here raise ``ValueError`` (the builtin: kernels sit below
``mpicoll.errors`` users, and decoders check payloads before any kernel sees them).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

#: ``scale_kind`` names -> the codes the compiled kernels take
SCALE_KINDS = {"max": 0, "l2": 1, "mean": 2}


# ---------------------------------------------------------------- shared checks


def check_k(k: int, n: int) -> None:
    """``0 <= k <= n`` (how many of ``n`` to pick)."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")


def check_bits(bits: int) -> None:
    """Packed code widths the formats define: 4 or 8."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")


def check_block(block: int) -> None:
    """Elements per scale: at least one."""
    if int(block) < 1:
        raise ValueError(f"block must be >= 1, got {block}")


def scale_kind_code(scale_kind: str) -> int:
    """The kernels' code of a ``scale_kind`` (``"max"``, ``"l2"`` or ``"mean"``)."""
    if scale_kind not in SCALE_KINDS:
        raise ValueError(f"unknown scale kind {scale_kind!r}")
    return SCALE_KINDS[scale_kind]


def check_length(what: str, array: Any, count: int) -> None:
    """Refuse an input shorter than what a kernel will read (a compiled kernel cannot raise)."""
    if array.size < count:
        raise ValueError(f"{what} holds {array.size} elements, {count} are needed")


def lowrank_shape(p: Any, q: Any, size: int) -> tuple[int, int, int]:
    """``(n, m, r)`` of ``lowrank_reconstruct``'s factors; raises ``ValueError`` when they cannot give
    ``size`` elements."""
    n, m, r = p.shape[0], q.shape[0], p.shape[1]
    if size > n * m or q.shape[1] != r:
        raise ValueError(f"lowrank_reconstruct: p {p.shape} and q {q.shape} cannot give {size} elements")
    return n, m, r


def _coded(x: Any, bits: int, block: int, scale_kind: str, qmax: int, stochastic: bool, base: int,
           out: Any = None) -> None:
    check_bits(bits)
    check_block(block)
    scale_kind_code(scale_kind)


def _decoded(packed: Any, scales: Any, n: int, bits: int, block: int, out: Any = None) -> None:
    check_bits(bits)
    check_block(block)
    check_length("packed", packed, (n * bits + 7) // 8)
    check_length("scales", scales, -(-n // block))


def _signs_decoded(packed: Any, scales: Any, n: int, block: int, out: Any = None) -> None:
    check_block(block)
    check_length("packed", packed, -(-n // 8))
    check_length("scales", scales, -(-n // block))


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Operation:
    """One kernel operation: its parameters, in order, and the checks run before any provider's code."""

    params: tuple[str, ...]
    check: Callable[..., Any] | None = None


OPERATIONS: dict[str, Operation] = {
    "uniform": Operation(("base", "n")),
    "stratified_indices": Operation(("base", "n", "k"), lambda base, n, k: check_k(k, n)),
    "topk": Operation(("x", "k"), lambda x, k: check_k(k, x.size)),
    "threshold": Operation(("x", "tau")),
    "nonzero": Operation(("x",)),
    "scatter_add": Operation(("dense", "idx", "vals")),
    "quantize": Operation(("x", "bits", "block", "scale_kind", "qmax", "stochastic", "base", "out"), _coded),
    "dequantize": Operation(("packed", "scales", "n", "bits", "block", "out"), _decoded),
    "sign_pack": Operation(("x", "block", "out"), lambda x, block, out=None: check_block(block)),
    "sign_unpack": Operation(("packed", "scales", "n", "block", "out"), _signs_decoded),
    "fp16_encode": Operation(("x", "out")),
    "fp16_decode": Operation(("h", "out")),
    "bf16_encode": Operation(("x", "out")),
    "bf16_decode": Operation(("h", "out")),
    "csr_build": Operation(("mat",)),
    "csr_densify": Operation(("indptr", "indices", "values", "shape", "dtype")),
    "lowrank_reconstruct": Operation(("p", "q", "size", "out"), lambda p, q, size, out=None: lowrank_shape(p, q, size)),
}


def implements(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the function implements operation ``name``; the shared checks run before it.

    Raises:
        TypeError: at import, when the function's parameters are not the declared ones.
    """
    op = OPERATIONS[name]

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = tuple(inspect.signature(fn).parameters)
        if params != op.params:
            raise TypeError(f"{fn.__module__}.{fn.__qualname__} implements {name!r} but takes {params}; "
                            f"the operation takes {op.params}")
        if op.check is None:
            checked = fn
        else:
            @functools.wraps(fn)
            def checked(*args: Any, **kwargs: Any) -> Any:
                op.check(*args, **kwargs)
                return fn(*args, **kwargs)

        checked.kernel_op = name  # type: ignore[attr-defined]
        return checked

    return register


def collect(provider: str, modules: Iterable[ModuleType]) -> dict[str, Callable[..., Any]]:
    """A provider's ``OPS`` table: the :func:`implements` functions of ``modules``, in declaration order.

    Raises:
        TypeError: an operation is missing, or implemented twice.
    """
    found: dict[str, Callable[..., Any]] = {}
    for module in modules:
        for value in vars(module).values():
            name = getattr(value, "kernel_op", None)
            if name is None:
                continue
            if found.get(name, value) is not value:
                raise TypeError(f"kernel provider {provider!r} implements {name!r} twice")
            found[name] = value
    missing = [name for name in OPERATIONS if name not in found]
    if missing:
        raise TypeError(f"kernel provider {provider!r} lacks {missing}")
    return {name: found[name] for name in OPERATIONS}
