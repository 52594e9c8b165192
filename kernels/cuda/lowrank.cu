// PowerSGD's reconstruction (reference.lowrank_reconstruct). Compiled after common.cu.

// out[idx] for idx < size: row i = idx / m, column j = idx % m of p @ q^T, where p is (n, r) and
// q is (m, r), both row-major float32. The products are rounded one by one (__fmul_rn) and added
// left to right (__fadd_rn), as the reference does: an explicit rounding is never fused.
extern "C" __global__ void mpicoll_lowrank_reconstruct(const float* p, const float* q, long long m, long long r,
                                                       long long size, float* out) {
    MPICOLL_FOR_EACH(idx, size) {
        const long long i = idx / m;
        const long long j = idx - i * m;
        float acc = 0.0f;
        if (r > 0) {
            acc = __fmul_rn(p[i * r], q[j * r]);
        }
        for (long long k = 1; k < r; ++k) {
            acc = __fadd_rn(acc, __fmul_rn(p[i * r + k], q[j * r + k]));
        }
        out[idx] = acc;
    }
}
