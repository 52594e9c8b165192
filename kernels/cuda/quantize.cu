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

// norm / qmax in float32 for block b, from the partials' total `acc`: sqrt (L2) or / count (mean)
// in float64, rounded to float32. A NaN passes through with the host's bits.
__device__ __forceinline__ float mpicoll_scale_of(double acc, int kind, long long n, long long block, long long b,
                                                  float qmax) {
    double norm = acc;  // max, or any NaN (sqrt and division pass a NaN through unchanged)
    if (acc == acc && kind == MPICOLL_SCALE_L2) {
        norm = __dsqrt_rn(acc);
    } else if (acc == acc && kind == MPICOLL_SCALE_MEAN) {
        norm = __ddiv_rn(acc, (double)(min(n, (b + 1) * block) - b * block));
    }
    return mpicoll_fdiv(mpicoll_narrow(norm), qmax);
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
        scales[b] = mpicoll_scale_of(acc, kind, n, block, b, qmax);
    }
}

// ------------------------------------------------------------------ long blocks, staged in shared memory
//
// The same two steps for blocks of many elements (one scale for a whole tensor: the sign codec's
// default). There the kernels above have one thread per lane of 8192 elements and one thread for
// a block's 2048 partials, each waiting on a memory load per add: 3.4 ms and 0.25 ms for 64 MiB
// on an H200, for a 22 us packing kernel. Here a thread block stages a tile of terms (or
// partials) in shared memory with every thread's coalesced loads, then the few threads the order
// allows add them, in the same order, from shared memory. The additions and their order are those
// of the kernels above; only where the terms wait differs. Sums never stop early: a NaN sum keeps
// the first NaN it met (mpicoll_dadd: a NaN first operand wins), and the maximum keeps its first
// NaN aside, so the result is the one the early exits above give.

#define MPICOLL_TILE 2048  // terms per tile: a multiple of the lanes (8), 16 KiB of doubles

// partial[r * lanes + l] for every (block b, chunk c), r = b * per_block + c: one thread block
// per chunk (grid-stride), thread l < lanes adding lane l.
extern "C" __global__ void mpicoll_scale_partials_tiled(const float* x, long long n, long long block, int kind,
                                                        long long chunk, int lanes, long long per_block,
                                                        long long chunks, double* partial) {
    __shared__ double terms[MPICOLL_TILE];
    for (long long r = blockIdx.x; r < chunks; r += gridDim.x) {
        const long long b = r / per_block;
        const long long lo = b * block + (r % per_block) * chunk;
        const long long hi = min(lo + chunk, min((b + 1) * block, n));
        double acc = 0.0;
        double first_nan = 0.0;
        bool nan_seen = false;
        for (long long start = lo; start < hi; start += MPICOLL_TILE) {  // the same bounds in every thread
            const long long count = min((long long)MPICOLL_TILE, hi - start);
            for (long long k = threadIdx.x; k < count; k += blockDim.x) terms[k] = mpicoll_term(x[start + k], kind);
            __syncthreads();
            if (threadIdx.x < lanes) {  // start - lo is a multiple of the lanes: element k is in lane k % lanes
                for (long long k = threadIdx.x; k < count; k += lanes) {
                    const double term = terms[k];
                    if (kind == MPICOLL_SCALE_MAX) {
                        const bool is_nan = term != term;
                        first_nan = is_nan && !nan_seen ? term : first_nan;
                        nan_seen = nan_seen || is_nan;
                        acc = !is_nan && term > acc ? term : acc;  // ties keep acc, as above
                    } else {
                        acc = mpicoll_dadd(acc, term);
                    }
                }
            }
            __syncthreads();
        }
        if (threadIdx.x < lanes) partial[r * lanes + threadIdx.x] = nan_seen ? first_nan : acc;
    }
}

// scales[b] from the partials of block b: one thread block per block (grid-stride); the partials
// staged a tile at a time, thread 0 adding them chunk by chunk as mpicoll_block_scales does.
extern "C" __global__ void mpicoll_block_scales_tiled(const double* partial, long long n, long long block, int kind,
                                                      int lanes, long long per_block, float qmax, float* scales) {
    __shared__ double staged[MPICOLL_TILE];
    const long long nblocks = (n + block - 1) / block;
    const long long total = per_block * lanes;
    for (long long b = blockIdx.x; b < nblocks; b += gridDim.x) {
        const double* p = partial + b * total;
        double acc = 0.0;
        bool stopped = false;  // kind 0 met a NaN: the maximum is that NaN
        for (long long start = 0; start < total; start += MPICOLL_TILE) {
            const long long count = min((long long)MPICOLL_TILE, total - start);
            for (long long k = threadIdx.x; k < count; k += blockDim.x) staged[k] = p[start + k];
            __syncthreads();
            if (threadIdx.x == 0) {
                for (long long c = 0; c < count; c += lanes) {  // whole chunks: the tile is a multiple of the lanes
                    double chunk_sum = 0.0;
                    for (int l = 0; l < lanes; ++l) {
                        const double v = staged[c + l];
                        if (kind == MPICOLL_SCALE_MAX) {
                            if (!stopped) acc = v == v && v <= acc ? acc : v;
                            stopped = stopped || acc != acc;
                        } else {
                            chunk_sum = mpicoll_dadd(chunk_sum, v);
                        }
                    }
                    if (kind != MPICOLL_SCALE_MAX) acc = mpicoll_dadd(acc, chunk_sum);
                }
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) scales[b] = mpicoll_scale_of(acc, kind, n, block, b, qmax);
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
