// Block quantization and 1-bit sign packing (reference.quantize / dequantize / sign_pack /
// sign_unpack). Compiled after common.cu (uniforms, the x86-exact float wrappers).

#define MPICOLL_SCALE_MAX 0
#define MPICOLL_SCALE_L2 1
#define MPICOLL_SCALE_MEAN 2

// Block scales, in two kernels. The contract (reference.ordered_sum) fixes the order of the
// float64 sums: a block is cut into chunks of `chunk` elements; in a chunk, element i goes to lane
// i % lanes and each lane is summed in index order; then the lanes are added in lane order and
// the chunk sums in chunk order. So one thread per (block, chunk, lane) sums its lane, and one
// thread per block adds the partial sums in that order: every addition the reference makes, in
// its order, with x86's NaN rules (a NaN sum keeps the first NaN it met, which mpicoll_dadd
// reproduces). The max |x| of kind 0 has no order to keep; it uses the same tasks.

// The lane's term for element v: |v| for max and mean, v * v for L2, widened like the host does.
__device__ __forceinline__ double mpicoll_term(float v, int kind) {
    if (kind == MPICOLL_SCALE_L2) {
        const double d = mpicoll_widen(v);
        return mpicoll_dmul(d, d);  // exact: a float32 squared fits a float64
    }
    return mpicoll_widen(__uint_as_float(__float_as_uint(v) & 0x7fffffffu));
}

// partial[t] for task t = (block b, chunk c, lane l), t = (b * per_block + c) * lanes + l: the sum
// of the lane's terms from 0.0 (the reference starts from the first term; with non-negative terms
// that is the same), or for kind 0 their maximum; a NaN ends the lane (it decides the result).
extern "C" __global__ void mpicoll_scale_partials(const float* x, long long n, long long block, int kind,
                                                  long long chunk, int lanes, long long per_block,
                                                  long long tasks, double* partial) {
    MPICOLL_FOR_EACH(t, tasks) {
        const long long r = t / lanes;
        const long long b = r / per_block;
        const long long lo = b * block + (r % per_block) * chunk;
        const long long hi = min(lo + chunk, min((b + 1) * block, n));
        double acc = 0.0;
        for (long long i = lo + t % lanes; i < hi; i += lanes) {
            const double term = mpicoll_term(x[i], kind);
            if (kind == MPICOLL_SCALE_MAX) {
                acc = term == term && term <= acc ? acc : term;
            } else {
                acc = mpicoll_dadd(acc, term);
            }
            if (acc != acc) break;
        }
        partial[t] = acc;
    }
}

// scales[b] = norm(block b) / qmax in float32, one thread per block: the partials in the
// contract's order (kind 0: their maximum, the first NaN if any), then sqrt (L2) or / count
// (mean) in float64, rounded to float32. A NaN norm passes through with the host's bits.
extern "C" __global__ void mpicoll_block_scales(const double* partial, long long n, long long block, int kind,
                                                int lanes, long long per_block, float qmax, float* scales) {
    const long long nblocks = (n + block - 1) / block;
    MPICOLL_FOR_EACH(b, nblocks) {
        const double* p = partial + b * per_block * lanes;
        double acc = 0.0;
        for (long long c = 0; c < per_block && acc == acc; ++c) {
            double chunk_sum = 0.0;
            for (int l = 0; l < lanes; ++l) {
                const double v = p[c * lanes + l];
                if (kind == MPICOLL_SCALE_MAX) {
                    acc = v == v && v <= acc ? acc : v;
                    if (acc != acc) break;
                } else {
                    chunk_sum = mpicoll_dadd(chunk_sum, v);
                }
            }
            if (kind != MPICOLL_SCALE_MAX) acc = mpicoll_dadd(acc, chunk_sum);
        }
        double norm = acc;  // max, or any NaN (sqrt and division pass a NaN through unchanged)
        if (acc == acc && kind == MPICOLL_SCALE_L2) {
            norm = __dsqrt_rn(acc);
        } else if (acc == acc && kind == MPICOLL_SCALE_MEAN) {
            norm = __ddiv_rn(acc, (double)(min(n, (b + 1) * block) - b * block));
        }
        scales[b] = mpicoll_fdiv(mpicoll_narrow(norm), qmax);
    }
}

// The signed code of x_i: v = x * (1 / scale) (0 where the scale is not > 0), then rint(v)
// (half to even) or floor(v + u_i); NaN -> 0; clipped to [-qmax, qmax].
__device__ __forceinline__ int mpicoll_code(float x, float scale, float qmax, bool stochastic,
                                            unsigned long long base, long long i) {
    const float inv = scale > 0.0f ? __fdiv_rn(1.0f, scale) : 0.0f;
    const float v = __fmul_rn(x, inv);
    float c = stochastic ? floorf(__fadd_rn(v, mpicoll_uniform24(base + (unsigned long long)i))) : rintf(v);
    if (c != c) return 0;
    c = c > qmax ? qmax : (c < -qmax ? -qmax : c);
    return (int)c;
}

// One thread per output byte: 8 / bits codes, two's complement, element 8j/bits + t in bits
// [t * bits, (t + 1) * bits) of byte j (for 4 bits: the even element in the low nibble); the
// unused high nibble of an odd-length tail is 0.
extern "C" __global__ void mpicoll_quantize_pack(const float* x, long long n, int bits, long long block,
                                                 const float* scales, float qmax, int stochastic,
                                                 unsigned long long base, unsigned char* out, long long nbytes) {
    const int per_byte = 8 / bits;
    const unsigned int field = (1u << bits) - 1u;
    MPICOLL_FOR_EACH(j, nbytes) {
        unsigned int byte = 0;
        for (int t = 0; t < per_byte; ++t) {
            const long long i = j * per_byte + t;
            if (i < n) {
                const int code = mpicoll_code(x[i], scales[i / block], qmax, stochastic != 0, base, i);
                byte |= ((unsigned int)code & field) << (t * bits);
            }
        }
        out[j] = (unsigned char)byte;
    }
}

// out[i] = code_i * scale_b in float32 (the code first, as in the reference's product).
extern "C" __global__ void mpicoll_dequantize(const unsigned char* packed, const float* scales, long long n, int bits,
                                              long long block, float* out) {
    const int per_byte = 8 / bits;
    MPICOLL_FOR_EACH(i, n) {
        const int shift = (int)(i % per_byte) * bits;
        int code = (packed[i / per_byte] >> shift) & ((1 << bits) - 1);
        if (code >= (1 << (bits - 1))) code -= 1 << bits;  // sign-extend the field
        out[i] = mpicoll_fmul(__int2float_rn(code), scales[i / block]);
    }
}

// Bit t of byte j is 1 where x[8j + t] < 0 (NumPy packbits, little bit order); -0.0 and NaN give 0.
extern "C" __global__ void mpicoll_sign_pack(const float* x, long long n, unsigned char* out, long long nbytes) {
    MPICOLL_FOR_EACH(j, nbytes) {
        unsigned int byte = 0;
        for (int t = 0; t < 8; ++t) {
            const long long i = 8 * j + t;
            if (i < n && x[i] < 0.0f) byte |= 1u << t;
        }
        out[j] = (unsigned char)byte;
    }
}

// out[i] = (1 - 2 * bit_i) * scale_b: +-1 times the scale, the sign first as in the reference.
extern "C" __global__ void mpicoll_sign_unpack(const unsigned char* packed, const float* scales, long long n,
                                               long long block, float* out) {
    MPICOLL_FOR_EACH(i, n) {
        const float sign = ((packed[i >> 3] >> (int)(i & 7)) & 1) ? -1.0f : 1.0f;
        out[i] = mpicoll_fmul(sign, scales[i / block]);
    }
}
