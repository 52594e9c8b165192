// Sparse data (reference.scatter_add / csr_build / csr_densify). Compiled after common.cu.
//
// Indices follow NumPy's fancy indexing: a negative index counts from the end. An index still
// out of range is skipped: NumPy raises IndexError, but a device cannot raise, and checking on
// the host would cost a synchronization; skipping at least never writes outside the array.

__device__ __forceinline__ long long mpicoll_wrap_index(long long j, long long size) {
    return j < 0 ? j + size : j;
}

// dense[idx[p]] += vals[p]: each index at most once per call (the contract), so no atomics and no
// order to fix. The sum is NumPy's on x86-64, NaN bits included (mpicoll_fadd / mpicoll_dadd).
extern "C" __global__ void mpicoll_scatter_add_f32(float* dense, long long size, const long long* idx,
                                                   const float* vals, long long m) {
    MPICOLL_FOR_EACH(p, m) {
        const long long j = mpicoll_wrap_index(idx[p], size);
        if (j >= 0 && j < size) dense[j] = mpicoll_fadd(dense[j], vals[p]);
    }
}

extern "C" __global__ void mpicoll_scatter_add_f64(double* dense, long long size, const long long* idx,
                                                   const double* vals, long long m) {
    MPICOLL_FOR_EACH(p, m) {
        const long long j = mpicoll_wrap_index(idx[p], size);
        if (j >= 0 && j < size) dense[j] = mpicoll_dadd(dense[j], vals[p]);
    }
}

// float16, as NumPy adds halves: both widened to float32 (exactly), added in float32, rounded
// once to half with the cast's NaN rule. NumPy's compiled loop evaluates the commutative sum with
// its operands swapped, so when both are NaN the NaN of vals wins: vals goes first here.
extern "C" __global__ void mpicoll_scatter_add_f16(unsigned short* dense, long long size, const long long* idx,
                                                   const unsigned short* vals, long long m) {
    MPICOLL_FOR_EACH(p, m) {
        const long long j = mpicoll_wrap_index(idx[p], size);
        if (j >= 0 && j < size) {
            const float a = __uint_as_float(mpicoll_half_to_float_bits(dense[j]));
            const float b = __uint_as_float(mpicoll_half_to_float_bits(vals[p]));
            dense[j] = mpicoll_float_to_half_bits(__float_as_uint(mpicoll_fadd(b, a)), false);
        }
    }
}

// indptr[r] = number of nonzeros before row r = first p with flat[p] >= r * cols (flat holds
// the sorted row-major positions of the nonzeros), by binary search, one thread per row.
extern "C" __global__ void mpicoll_csr_indptr(const long long* flat, long long nnz, long long rows, long long cols,
                                              long long* indptr) {
    MPICOLL_FOR_EACH(r, rows + 1) {
        const long long target = r * cols;
        long long lo = 0, hi = nnz;
        while (lo < hi) {
            const long long mid = lo + (hi - lo) / 2;
            if (flat[mid] < target) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        indptr[r] = lo;
    }
}

// indices[p] = column of nonzero p, values[p] = its bits (copied, never converted).
template <typename T>
__device__ __forceinline__ void mpicoll_csr_fill(const long long* flat, long long nnz, long long cols, const T* mat,
                                                 long long* indices, T* values) {
    MPICOLL_FOR_EACH(p, nnz) {
        const long long f = flat[p];
        indices[p] = f % cols;
        values[p] = mat[f];
    }
}

extern "C" __global__ void mpicoll_csr_fill_u16(const long long* flat, long long nnz, long long cols,
                                                const unsigned short* mat, long long* indices,
                                                unsigned short* values) {
    mpicoll_csr_fill(flat, nnz, cols, mat, indices, values);
}

extern "C" __global__ void mpicoll_csr_fill_u32(const long long* flat, long long nnz, long long cols,
                                                const unsigned int* mat, long long* indices, unsigned int* values) {
    mpicoll_csr_fill(flat, nnz, cols, mat, indices, values);
}

extern "C" __global__ void mpicoll_csr_fill_u64(const long long* flat, long long nnz, long long cols,
                                                const unsigned long long* mat, long long* indices,
                                                unsigned long long* values) {
    mpicoll_csr_fill(flat, nnz, cols, mat, indices, values);
}

// out[row(p), indices[p]] = values[p], one thread per stored entry. row(p) is the last r with
// indptr[r] - indptr[0] <= p (binary search; empty rows share their indptr value), which is
// the row NumPy's repeat(arange(rows), diff(indptr)) gives entry p. Entries must not repeat a
// position (csr_build never does); values are copied as bits.
template <typename T>
__device__ __forceinline__ void mpicoll_csr_densify(const long long* indptr, long long rows, const long long* indices,
                                                    const T* values, long long nnz, long long cols, T* out) {
    const long long first = indptr[0];
    MPICOLL_FOR_EACH(p, nnz) {
        long long lo = 0, hi = rows + 1;  // first r with indptr[r] - first > p
        while (lo < hi) {
            const long long mid = lo + (hi - lo) / 2;
            if (indptr[mid] - first <= p) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        const long long row = lo - 1;
        const long long col = mpicoll_wrap_index(indices[p], cols);
        if (row >= 0 && row < rows && col >= 0 && col < cols) out[row * cols + col] = values[p];
    }
}

extern "C" __global__ void mpicoll_csr_densify_u16(const long long* indptr, long long rows, const long long* indices,
                                                   const unsigned short* values, long long nnz, long long cols,
                                                   unsigned short* out) {
    mpicoll_csr_densify(indptr, rows, indices, values, nnz, cols, out);
}

extern "C" __global__ void mpicoll_csr_densify_u32(const long long* indptr, long long rows, const long long* indices,
                                                   const unsigned int* values, long long nnz, long long cols,
                                                   unsigned int* out) {
    mpicoll_csr_densify(indptr, rows, indices, values, nnz, cols, out);
}

extern "C" __global__ void mpicoll_csr_densify_u64(const long long* indptr, long long rows, const long long* indices,
                                                   const unsigned long long* values, long long nnz, long long cols,
                                                   unsigned long long* out) {
    mpicoll_csr_densify(indptr, rows, indices, values, nnz, cols, out);
}
