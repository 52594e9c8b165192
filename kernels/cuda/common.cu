// Shared device helpers of the CuPy kernel provider (mpicoll.kernels.cupy_provider).
//
// This file holds no kernel. The provider compiles each family (hash.cu, select.cu, ...) as this
// prelude followed by the family's source, in one translation unit, so the helpers are written
// once; tests/unit/test_cuda_sources.py compiles the same concatenation with nvcc. No #include:
// CuPy compiles without its own headers, and NVRTC provides the CUDA built-ins.
//
// Everything here serves bitwise parity with the NumPy reference (kernels/reference.py):
// - float arithmetic goes through the explicitly rounded intrinsics (__fadd_rn, __fmul_rn, ...),
//   which are never contracted into an FMA, whatever the compile options say;
// - a GPU returns one canonical NaN (0x7fffffff) from any arithmetic, while the reference runs
//   on an x86-64 host whose SSE/AVX rules pick the NaN bits: the first NaN operand, quieted, or
//   the "default NaN" (sign set) when no operand is a NaN (inf - inf, 0 * inf). The mpicoll_f*/d*
//   wrappers rebuild those bits, so NaN outputs match the reference bit for bit as well.

#define MPICOLL_F32_QUIET 0x00400000u
#define MPICOLL_F32_DEFAULT_NAN 0xffc00000u
#define MPICOLL_F64_QUIET 0x0008000000000000ull
#define MPICOLL_F64_DEFAULT_NAN 0xfff8000000000000ull

// A grid-stride loop over [0, n) with 64-bit indices: any grid size covers any n.
#define MPICOLL_FOR_EACH(i, n)                                                     \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)gridDim.x * blockDim.x)

// ------------------------------------------------------------------ counter hash (hashing.py)

// SplitMix64's finalizer, the same steps as hashing.mix64 (unsigned arithmetic wraps mod 2**64).
__device__ __forceinline__ unsigned long long mpicoll_mix64(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// hashing.uniform24 of one counter: the top 24 bits times 2**-24; both steps are exact in float32.
__device__ __forceinline__ float mpicoll_uniform24(unsigned long long counter) {
    return __fmul_rn(__ull2float_rn(mpicoll_mix64(counter) >> 40), 5.9604644775390625e-8f);
}

// ------------------------------------------------------------------ x86 NaN rules

__device__ __forceinline__ float mpicoll_x86_nan_f32(float a, float b) {
    if (a != a) return __uint_as_float(__float_as_uint(a) | MPICOLL_F32_QUIET);
    if (b != b) return __uint_as_float(__float_as_uint(b) | MPICOLL_F32_QUIET);
    return __uint_as_float(MPICOLL_F32_DEFAULT_NAN);
}

__device__ __forceinline__ double mpicoll_x86_nan_f64(double a, double b) {
    if (a != a) return __longlong_as_double(__double_as_longlong(a) | (long long)MPICOLL_F64_QUIET);
    if (b != b) return __longlong_as_double(__double_as_longlong(b) | (long long)MPICOLL_F64_QUIET);
    return __longlong_as_double((long long)MPICOLL_F64_DEFAULT_NAN);
}

// a + b, a * b, a / b in float32 exactly as NumPy computes them on x86-64 (a is the first operand).
__device__ __forceinline__ float mpicoll_fadd(float a, float b) {
    const float r = __fadd_rn(a, b);
    return r == r ? r : mpicoll_x86_nan_f32(a, b);
}

__device__ __forceinline__ float mpicoll_fmul(float a, float b) {
    const float r = __fmul_rn(a, b);
    return r == r ? r : mpicoll_x86_nan_f32(a, b);
}

__device__ __forceinline__ float mpicoll_fdiv(float a, float b) {
    const float r = __fdiv_rn(a, b);
    return r == r ? r : mpicoll_x86_nan_f32(a, b);
}

__device__ __forceinline__ double mpicoll_dadd(double a, double b) {
    const double r = __dadd_rn(a, b);
    return r == r ? r : mpicoll_x86_nan_f64(a, b);
}

__device__ __forceinline__ double mpicoll_dmul(double a, double b) {
    const double r = __dmul_rn(a, b);
    return r == r ? r : mpicoll_x86_nan_f64(a, b);
}

// float32 -> float64 and back as x86 converts (cvtss2sd, cvtsd2ss): numbers exactly / rounded to
// nearest even; a NaN keeps its sign and its payload (moved by 29 bits) and is quieted.
__device__ __forceinline__ double mpicoll_widen(float v) {
    if (v == v) return (double)v;
    const unsigned long long b = __float_as_uint(v);
    return __longlong_as_double((long long)(((b & 0x80000000ull) << 32) | 0x7ff0000000000000ull |
                                            MPICOLL_F64_QUIET | ((b & 0x007fffffull) << 29)));
}

__device__ __forceinline__ float mpicoll_narrow(double d) {
    if (d == d) return __double2float_rn(d);
    const unsigned long long b = (unsigned long long)__double_as_longlong(d);
    return __uint_as_float(((unsigned int)(b >> 32) & 0x80000000u) | 0x7f800000u | MPICOLL_F32_QUIET |
                           (unsigned int)((b & 0x000fffffffffffffull) >> 29));
}

// ------------------------------------------------------------------ IEEE half <-> float32 bits

// Half bits -> float32 bits, as NumPy converts (npy_halfbits_to_floatbits): exact for numbers;
// a NaN keeps its sign and payload (moved up 13 bits) and is NOT quieted.
__device__ __forceinline__ unsigned int mpicoll_half_to_float_bits(unsigned int h) {
    const unsigned int sign = (h & 0x8000u) << 16;
    const unsigned int exp = h & 0x7c00u;
    const unsigned int sig = h & 0x03ffu;
    if (exp == 0x7c00u) return sign | 0x7f800000u | (sig << 13);               // inf, NaN
    if (exp != 0) return sign | (((exp >> 10) + 112u) << 23) | (sig << 13);   // rebias 15 -> 127
    if (sig == 0) return sign;                                                 // signed zero
    // Subnormal: sig * 2**-24 with its leading one at bit p becomes 1.f * 2**(p - 24).
    const unsigned int p = 31u - (unsigned int)__clz(sig);
    return sign | ((103u + p) << 23) | (((sig << (10u - p)) & 0x03ffu) << 13);
}

// Float32 bits -> half bits, round to nearest even, overflow to inf, subnormals rounded once:
// NumPy's npy_floatbits_to_halfbits bit for bit (numba_cpu._fp16_encode is the same port).
// A NaN becomes 0x7e00 | sign when `canonical_nan` (the fp16_encode contract); otherwise it keeps
// the top 10 payload bits like a NumPy cast (0x7c01 if none survive, so it stays a NaN).
__device__ __forceinline__ unsigned short mpicoll_float_to_half_bits(unsigned int f, bool canonical_nan) {
    const unsigned int sign = (f >> 16) & 0x8000u;
    f &= 0x7fffffffu;
    const unsigned int exp = f & 0x7f800000u;
    if (exp >= 0x47800000u) {  // inf, NaN, or too large for a half
        if (f <= 0x7f800000u) return (unsigned short)(sign | 0x7c00u);
        if (canonical_nan) return (unsigned short)(sign | 0x7e00u);
        const unsigned int payload = (f & 0x007fffffu) >> 13;
        return (unsigned short)(sign | 0x7c00u | (payload != 0 ? payload : 1u));
    }
    if (exp <= 0x38000000u) {  // a half subnormal, or zero
        if (exp < 0x33000000u) return (unsigned short)sign;  // below half the smallest subnormal
        const unsigned int e = exp >> 23;
        unsigned int sig = (0x00800000u + (f & 0x007fffffu)) >> (113u - e);
        // Ties to even: skip the rounding increment only on an exact tie (including the bits
        // the shift dropped, which are the low 11 bits of f at most) with an even result.
        if ((sig & 0x3fffu) != 0x1000u || (f & 0x7ffu) != 0) sig += 0x1000u;
        return (unsigned short)(sign + (sig >> 13));  // a carry into the exponent is correct
    }
    const unsigned int hexp = (exp - 0x38000000u) >> 13;
    unsigned int sig = f & 0x007fffffu;
    if ((sig & 0x3fffu) != 0x1000u) sig += 0x1000u;
    return (unsigned short)(sign + (sig >> 13) + hexp);  // a carry may round up to inf: correct
}
