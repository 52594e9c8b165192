// 16-bit floats and NumPy-exact casts to float32 (reference.fp16_* / bf16_*, and the
// `astype(float32)` the reference applies to float16 and float64 inputs). Compiled after
// common.cu (mpicoll_half_to_float_bits, mpicoll_float_to_half_bits). Floats travel as their
// bit patterns, so no arithmetic can touch a NaN payload.

// float32 bits -> IEEE half bits: round to nearest even, overflow to inf, NaN -> 0x7e00 | sign.
extern "C" __global__ void mpicoll_fp16_encode(const unsigned int* bits, long long n, unsigned short* out) {
    MPICOLL_FOR_EACH(i, n) {
        out[i] = mpicoll_float_to_half_bits(bits[i], true);
    }
}

// IEEE half bits -> float32 bits, exact; a NaN keeps sign and payload, unquieted, as in NumPy.
// Also the float16 -> float32 input cast of the other operations.
extern "C" __global__ void mpicoll_fp16_decode(const unsigned short* h, long long n, unsigned int* out) {
    MPICOLL_FOR_EACH(i, n) {
        out[i] = mpicoll_half_to_float_bits(h[i]);
    }
}

// float32 bits -> bfloat16 bits: round to nearest even on the upper half (cannot wrap: the
// largest non-NaN pattern is 0xff800000); a NaN keeps its upper half, made quiet.
extern "C" __global__ void mpicoll_bf16_encode(const unsigned int* bits, long long n, unsigned short* out) {
    MPICOLL_FOR_EACH(i, n) {
        const unsigned int b = bits[i];
        const unsigned int r = (b & 0x7fffffffu) > 0x7f800000u ? (b >> 16) | 0x0040u
                                                               : (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
        out[i] = (unsigned short)r;
    }
}

// bfloat16 bits -> float32 bits: the upper half of the word, exact.
extern "C" __global__ void mpicoll_bf16_decode(const unsigned short* h, long long n, unsigned int* out) {
    MPICOLL_FOR_EACH(i, n) {
        out[i] = (unsigned int)h[i] << 16;
    }
}

// float64 -> float32 as NumPy casts on x86-64 (mpicoll_narrow): numbers round to nearest even
// (subnormal results kept, overflow to inf); a NaN keeps its sign and top 23 payload bits and is
// quieted, where a GPU conversion would return the canonical NaN.
extern "C" __global__ void mpicoll_f64_to_f32(const unsigned long long* bits, long long n, float* out) {
    MPICOLL_FOR_EACH(i, n) {
        out[i] = mpicoll_narrow(__longlong_as_double((long long)bits[i]));
    }
}

// float32 -> float64 as NumPy casts on x86-64 (mpicoll_widen): exact for numbers, subnormals
// included (CuPy's own astype is compiled with -ftz=true and flushes them); a NaN keeps its sign
// and payload and is quieted.
extern "C" __global__ void mpicoll_f32_to_f64(const unsigned int* bits, long long n, double* out) {
    MPICOLL_FOR_EACH(i, n) {
        out[i] = mpicoll_widen(__uint_as_float(bits[i]));
    }
}
