// Selections by magnitude (reference.topk / threshold / nonzero, and csr_build's nonzeros).
// Compiled after common.cu.
//
// A key is an element's bit pattern with the sign bit masked off (the mask is an argument, all
// ones for integer data), so unsigned key order is |x| order and a NaN ranks above inf. Keys
// are loaded as 16-, 32- or 64-bit words and compared as 64-bit; each templated body has one
// extern "C" entry point per width (_u16, _u32, _u64).
//
// Top-k = radix selection of the k-th largest key (8-bit digits, most significant first, the
// running prefix and rank kept on the device in state[0] and state[1], so no pass waits for the
// host), then the order-preserving compaction below with that key as the pivot.
//
// Compaction keeps every index whose key is above the pivot, plus the first `quota` indices whose
// key equals it (ties go to the lower index). One CUDA block owns one chunk of consecutive
// elements: a first kernel counts each chunk's hits, the host turns the counts into output
// offsets with integer prefix sums, and a second kernel writes each chunk's hits in index order
// (ballot ranks, tile by tile), so the output comes out sorted without a sort.

#define MPICOLL_DIGIT_BITS 8
#define MPICOLL_DIGITS 256

// ------------------------------------------------------------------ radix selection

// hist[d] += number of keys whose digit at `shift` is d, among the keys whose higher digits
// equal the prefix chosen so far (state[0]); every key counts for the most significant digit.
template <typename K>
__device__ __forceinline__ void mpicoll_radix_hist(const K* keys, long long n, unsigned long long mask,
                                                   const unsigned long long* state, int shift,
                                                   unsigned long long* hist) {
    __shared__ unsigned int local[MPICOLL_DIGITS];  // per-block counts: atomics stay on chip
    for (int d = threadIdx.x; d < MPICOLL_DIGITS; d += blockDim.x) local[d] = 0;
    __syncthreads();
    const bool top = shift + MPICOLL_DIGIT_BITS >= (int)(8 * sizeof(K));
    const unsigned long long prefix = state[0];
    MPICOLL_FOR_EACH(i, n) {
        const unsigned long long key = (unsigned long long)keys[i] & mask;
        // `top` first: a shift by the full key width would be undefined
        if (top || (key >> (shift + MPICOLL_DIGIT_BITS)) == prefix) {
            atomicAdd(&local[(key >> shift) & (MPICOLL_DIGITS - 1)], 1u);
        }
    }
    __syncthreads();
    for (int d = threadIdx.x; d < MPICOLL_DIGITS; d += blockDim.x) {
        if (local[d] != 0) atomicAdd(&hist[d], (unsigned long long)local[d]);
    }
}

extern "C" __global__ void mpicoll_radix_hist_u16(const unsigned short* keys, long long n, unsigned long long mask,
                                                  const unsigned long long* state, int shift,
                                                  unsigned long long* hist) {
    mpicoll_radix_hist(keys, n, mask, state, shift, hist);
}

extern "C" __global__ void mpicoll_radix_hist_u32(const unsigned int* keys, long long n, unsigned long long mask,
                                                  const unsigned long long* state, int shift,
                                                  unsigned long long* hist) {
    mpicoll_radix_hist(keys, n, mask, state, shift, hist);
}

extern "C" __global__ void mpicoll_radix_hist_u64(const unsigned long long* keys, long long n,
                                                  unsigned long long mask, const unsigned long long* state,
                                                  int shift, unsigned long long* hist) {
    mpicoll_radix_hist(keys, n, mask, state, shift, hist);
}

// One thread, launched after each histogram: the digit holding the state[1]-th largest key among
// those with the current prefix (the highest digit whose count from the top reaches the rank);
// appends it to the prefix and leaves the rank within that digit. After the last digit, state[0]
// is the k-th largest key and state[1] the number of keys equal to it that the top k keep.
extern "C" __global__ void mpicoll_radix_pick(const unsigned long long* hist, unsigned long long* state) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const unsigned long long rank = state[1];
    unsigned long long above = 0;
    for (int d = MPICOLL_DIGITS - 1; d >= 0; --d) {
        if (above + hist[d] >= rank) {
            state[0] = (state[0] << MPICOLL_DIGIT_BITS) | (unsigned long long)d;
            state[1] = rank - above;
            return;
        }
        above += hist[d];
    }
}

// ------------------------------------------------------------------ order-preserving compaction

// The exclusive rank of `flag` among the block's threads (thread order is index order) and the
// block's count of set flags. Every thread of the block must call it: it synchronizes.
// blockDim.x must be a multiple of 32, at most 1024.
__device__ __forceinline__ unsigned int mpicoll_block_rank(bool flag, unsigned int* total) {
    __shared__ unsigned int warp_counts[32];
    const unsigned int lane = threadIdx.x & 31u;
    const unsigned int warp = threadIdx.x >> 5;
    const unsigned int ballot = __ballot_sync(0xffffffffu, flag);
    if (lane == 0) warp_counts[warp] = (unsigned int)__popc(ballot);
    __syncthreads();
    unsigned int before = (unsigned int)__popc(ballot & ((1u << lane) - 1u));
    unsigned int sum = 0;
    for (unsigned int w = 0; w < (blockDim.x >> 5); ++w) {
        if (w < warp) before += warp_counts[w];
        sum += warp_counts[w];
    }
    __syncthreads();  // everyone has read warp_counts before the next call overwrites it
    *total = sum;
    return before;
}

// above[c], ties[c]: keys of chunk c (block c) greater than / equal to the pivot state[0].
template <typename K>
__device__ __forceinline__ void mpicoll_compact_count(const K* keys, long long n, unsigned long long mask,
                                                      const unsigned long long* state, long long chunk,
                                                      long long* above, long long* ties) {
    __shared__ unsigned int sums[2];
    if (threadIdx.x == 0) {
        sums[0] = 0;
        sums[1] = 0;
    }
    __syncthreads();
    const unsigned long long pivot = state[0];
    const long long lo = (long long)blockIdx.x * chunk;
    const long long hi = min(n, lo + chunk);
    unsigned int a = 0, t = 0;
    for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const unsigned long long key = (unsigned long long)keys[i] & mask;
        a += key > pivot ? 1u : 0u;
        t += key == pivot ? 1u : 0u;
    }
    atomicAdd(&sums[0], a);  // integer sums: the order of the atomics does not matter
    atomicAdd(&sums[1], t);
    __syncthreads();
    if (threadIdx.x == 0) {
        above[blockIdx.x] = sums[0];
        ties[blockIdx.x] = sums[1];
    }
}

extern "C" __global__ void mpicoll_compact_count_u16(const unsigned short* keys, long long n, unsigned long long mask,
                                                     const unsigned long long* state, long long chunk,
                                                     long long* above, long long* ties) {
    mpicoll_compact_count(keys, n, mask, state, chunk, above, ties);
}

extern "C" __global__ void mpicoll_compact_count_u32(const unsigned int* keys, long long n, unsigned long long mask,
                                                     const unsigned long long* state, long long chunk,
                                                     long long* above, long long* ties) {
    mpicoll_compact_count(keys, n, mask, state, chunk, above, ties);
}

extern "C" __global__ void mpicoll_compact_count_u64(const unsigned long long* keys, long long n,
                                                     unsigned long long mask, const unsigned long long* state,
                                                     long long chunk, long long* above, long long* ties) {
    mpicoll_compact_count(keys, n, mask, state, chunk, above, ties);
}

// Writes the indices of chunk c that are kept, in index order, from out[offsets[c]]: keys above
// the pivot, and the first quota[c] keys equal to it. Tiles of blockDim.x elements are ranked in
// turn; the loop bound is the same for every thread, as mpicoll_block_rank requires.
template <typename K>
__device__ __forceinline__ void mpicoll_compact_write(const K* keys, long long n, unsigned long long mask,
                                                      const unsigned long long* state, long long chunk,
                                                      const long long* offsets, const long long* quota,
                                                      long long* out) {
    const unsigned long long pivot = state[0];
    const long long lo = (long long)blockIdx.x * chunk;
    const long long hi = min(n, lo + chunk);
    const long long keep_ties = quota[blockIdx.x];
    long long pos = offsets[blockIdx.x];
    long long ties_seen = 0;
    for (long long tile = lo; tile < hi; tile += blockDim.x) {
        const long long i = tile + threadIdx.x;
        const bool valid = i < hi;
        const unsigned long long key = valid ? ((unsigned long long)keys[i] & mask) : 0ull;
        const bool tie = valid && key == pivot;
        unsigned int tie_total, keep_total;
        const unsigned int tie_rank = mpicoll_block_rank(tie, &tie_total);
        const bool keep = valid && (key > pivot || (tie && ties_seen + tie_rank < keep_ties));
        const unsigned int keep_rank = mpicoll_block_rank(keep, &keep_total);
        if (keep) out[pos + keep_rank] = i;
        pos += keep_total;
        ties_seen += tie_total;
    }
}

extern "C" __global__ void mpicoll_compact_write_u16(const unsigned short* keys, long long n, unsigned long long mask,
                                                     const unsigned long long* state, long long chunk,
                                                     const long long* offsets, const long long* quota,
                                                     long long* out) {
    mpicoll_compact_write(keys, n, mask, state, chunk, offsets, quota, out);
}

extern "C" __global__ void mpicoll_compact_write_u32(const unsigned int* keys, long long n, unsigned long long mask,
                                                     const unsigned long long* state, long long chunk,
                                                     const long long* offsets, const long long* quota,
                                                     long long* out) {
    mpicoll_compact_write(keys, n, mask, state, chunk, offsets, quota, out);
}

extern "C" __global__ void mpicoll_compact_write_u64(const unsigned long long* keys, long long n,
                                                     unsigned long long mask, const unsigned long long* state,
                                                     long long chunk, const long long* offsets,
                                                     const long long* quota, long long* out) {
    mpicoll_compact_write(keys, n, mask, state, chunk, offsets, quota, out);
}
