"""fp16 and bf16: F16C instructions where the CPU has them, bit-level conversions otherwise."""

from __future__ import annotations

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

from ..ops import implements
from .common import OPTS


@njit(**OPTS)
def _fp16_encode(bits, out):
    for i in prange(bits.size):
        f = np.uint32(bits[i])
        sign = np.uint32((f >> np.uint32(16)) & np.uint32(0x8000))
        f = f & np.uint32(0x7FFFFFFF)
        exp = f & np.uint32(0x7F800000)
        if exp >= np.uint32(0x47800000):  # inf, nan, or too large
            if f > np.uint32(0x7F800000):
                out[i] = sign | np.uint32(0x7E00)
            else:
                out[i] = sign | np.uint32(0x7C00)
        elif exp <= np.uint32(0x38000000):  # half subnormal or underflow to zero
            if exp < np.uint32(0x33000000):
                out[i] = sign
            else:
                e = exp >> np.uint32(23)
                sig = np.uint32(0x00800000) + (f & np.uint32(0x007FFFFF))
                sig = sig >> (np.uint32(113) - e)
                if (sig & np.uint32(0x3FFF)) != np.uint32(0x1000) or (f & np.uint32(0x7FF)) != 0:
                    sig += np.uint32(0x1000)
                out[i] = sign + (sig >> np.uint32(13))
        else:  # normal: round to nearest even; a carry into the exponent is correct (up to inf)
            hexp = (exp - np.uint32(0x38000000)) >> np.uint32(13)
            sig = f & np.uint32(0x007FFFFF)
            if (sig & np.uint32(0x3FFF)) != np.uint32(0x1000):
                sig += np.uint32(0x1000)
            out[i] = sign + ((sig >> np.uint32(13)) + hexp)


def _out(out, n: int, dtype):
    return np.empty(n, dtype=dtype) if out is None else out


@intrinsic
def _f32_to_f16_bits(typingctx, value):
    """LLVM ``fptrunc float -> half``: one F16C instruction (vcvtps2ph), IEEE round to nearest even."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(types.float32), codegen


@intrinsic
def _f16_bits_to_f32(typingctx, bits):
    """LLVM ``fpext half -> float`` (vcvtph2ps): exact."""
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@njit(**OPTS)
def _fp16_encode_f16c(x, out):
    for i in prange(x.size):
        h = _f32_to_f16_bits(x[i])
        if x[i] != x[i]:  # the contract's canonical NaN, sign kept
            h = np.uint16((h & 0x8000) | 0x7E00)
        out[i] = h


@intrinsic
def _u32_as_f32(typingctx, bits):
    """Reinterpret 32 bits as a float32."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@njit(**OPTS)
def _fp16_decode_f16c(h, out):
    for i in prange(h.size):
        v = np.uint32(h[i])
        if (v & np.uint32(0x7FFF)) > np.uint32(0x7C00):  # NaN: keep its payload (the hardware would quiet it)
            out[i] = _u32_as_f32(((v & np.uint32(0x8000)) << np.uint32(16)) | np.uint32(0x7F800000)
                                 | ((v & np.uint32(0x3FF)) << np.uint32(13)))
        else:
            out[i] = _f16_bits_to_f32(h[i])


# The hardware conversions need the CPU's F16C extension; without it LLVM would call a soft-float
# routine Numba cannot link, so fall back to the bit-level conversion and the lookup table.
_F16C = "+f16c" in llvm_binding.get_host_cpu_features().flatten().split(",")


@implements("fp16_encode")
def fp16_encode(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = _out(out, x.size, np.uint16)
    if _F16C:
        _fp16_encode_f16c(x, out)
    else:
        _fp16_encode(x.view(np.uint32), out)
    return out


_HALF_TO_FLOAT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)  # exact, 256 KiB


@njit(**OPTS)
def _lookup(h, table, out):
    for i in prange(h.size):
        out[i] = table[h[i]]


@implements("fp16_decode")
def fp16_decode(h: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    out = _out(out, h.size, np.float32)
    if _F16C:
        _fp16_decode_f16c(np.ascontiguousarray(h), out)
    else:
        _lookup(np.ascontiguousarray(h), _HALF_TO_FLOAT, out)
    return out


@njit(**OPTS)
def _bf16_encode(bits, out):
    for i in prange(bits.size):
        b = bits[i]
        if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
            out[i] = (b >> np.uint32(16)) | np.uint32(0x0040)
        else:
            out[i] = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)


@implements("bf16_encode")
def bf16_encode(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    out = _out(out, bits.size, np.uint16)
    _bf16_encode(bits, out)
    return out


@njit(**OPTS)
def _bf16_decode(h, out):
    for i in prange(h.size):
        out[i] = np.uint32(h[i]) << np.uint32(16)


@implements("bf16_decode")
def bf16_decode(h: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    out = _out(out, h.size, np.float32)
    _bf16_decode(np.ascontiguousarray(h), out.view(np.uint32))
    return out
