// Counter-hash random numbers (kernels/hashing.py, reference.uniform / stratified_indices).
// Compiled after common.cu (mpicoll_mix64, mpicoll_uniform24).

// out[i] = hashing.uniform24(base + i): counters wrap modulo 2**64 like NumPy's uint64.
extern "C" __global__ void mpicoll_uniform(unsigned long long base, long long n, float* out) {
    MPICOLL_FOR_EACH(i, n) {
        out[i] = mpicoll_uniform24(base + (unsigned long long)i);
    }
}

// One index per stratum: [0, n) cut into k runs whose sizes differ by at most one (the first
// n % k are one longer); stratum j draws start_j + mix64(base + j) % size_j. Needs 1 <= k <= n.
extern "C" __global__ void mpicoll_stratified_indices(unsigned long long base, long long n, long long k,
                                                      long long* out) {
    const long long small = n / k;
    const long long extra = n % k;
    MPICOLL_FOR_EACH(j, k) {
        const long long size = small + (j < extra ? 1 : 0);
        const long long start = j * small + (j < extra ? j : extra);
        const unsigned long long draw = mpicoll_mix64(base + (unsigned long long)j);
        out[j] = start + (long long)(draw % (unsigned long long)size);
    }
}
