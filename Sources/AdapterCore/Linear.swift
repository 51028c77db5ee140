import CKernels

/// out[T, N] = inp[T, K] · W[N, K]^T (+ bias[N]), where W keeps its stored dtype.
/// Decoding (T small) uses SIMD mat-vec kernels that read each weight once; prefill converts
/// tiles of W to f32 and calls GEMM, so f16 weights never need a permanent f32 copy.
public func linearForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: Tensor,
                          bias: UnsafePointer<Float>? = nil, T: Int, pool: ThreadPool = .shared) {
    precondition(weight.shape.count == 2, "linear weight must be 2-D")
    let N = weight.shape[0], K = weight.shape[1]
    if T <= 2 {
        for t in 0..<T {
            matvec(out: out + t * N, x: inp + t * K, weight: weight, pool: pool)
        }
    } else {
        gemmWeight(out: out, inp: inp, weight: weight, T: T, pool: pool)
    }
    if let bias {
        for t in 0..<T { ck_axpy_f32(1, bias, out + t * N, N) }
    }
}

/// y[N] = W[N, K] · x[K], rows split over the pool.
public func matvec(out y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, weight: Tensor, pool: ThreadPool = .shared) {
    let N = weight.shape[0], K = weight.shape[1]
    let w = weight.data
    let minRows = max(1, 16384 / max(K, 1))
    switch weight.dtype {
    case .f32:
        let wp = w.assumingMemoryBound(to: Float.self)
        pool.parallelFor(N, minChunk: minRows) { r in ck_matvec_f32(wp, x, y, K, r.lowerBound, r.upperBound) }
    case .f16:
        let wp = w.assumingMemoryBound(to: UInt16.self)
        pool.parallelFor(N, minChunk: minRows) { r in ck_matvec_f16(wp, x, y, K, r.lowerBound, r.upperBound) }
    case .bf16:
        let wp = w.assumingMemoryBound(to: UInt16.self)
        pool.parallelFor(N, minChunk: minRows) { r in ck_matvec_bf16(wp, x, y, K, r.lowerBound, r.upperBound) }
    default:
        quantizedMatvec(out: y, x: x, weight: weight, pool: pool)
    }
}

/// Quantized mat-vec: Q4_0/Q4_1/Q8_0 through SIMD block kernels with f32 activations; other block types
/// (K-quants) dequantize one row at a time into a per-thread buffer, then take a SIMD dot product.
public func quantizedMatvec(out y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, weight: Tensor, pool: ThreadPool) {
    let N = weight.shape[0], K = weight.shape[1]
    let w = weight.data
    let minRows = max(1, 16384 / max(K, 1))
    switch weight.dtype {
    case .q4_0, .q4_1, .q8_0:
        withUnsafeTemporaryAllocation(of: Float.self, capacity: K / 32) { sums in
            let xs = sums.baseAddress!
            ck_block_sums32(x, xs, K)
            let kernel: (UnsafeRawPointer?, UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafeMutablePointer<Float>?, Int, Int, Int) -> Void
            switch weight.dtype {
            case .q4_0: kernel = ck_matvec_q4_0
            case .q4_1: kernel = ck_matvec_q4_1
            default: kernel = ck_matvec_q8_0
            }
            pool.parallelFor(N, minChunk: minRows) { r in kernel(w, x, xs, y, K, r.lowerBound, r.upperBound) }
        }
    default:
        let rowBytes = weight.dtype.byteCount(elements: K)
        pool.parallelFor(N, minChunk: minRows) { r in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: K) { row in
                for i in r {
                    convertToFloat(dtype: weight.dtype, src: w + i * rowBytes, dst: row.baseAddress!, count: K)
                    y[i] = ck_dot_f32(row.baseAddress!, x, K)
                }
            }
        }
    }
}

/// GEMM against a weight of any dtype: each thread takes a band of weight rows (output columns),
/// converts it tile by tile into its own f32 scratch and multiplies with BLAS (single-threaded inside).
public func gemmWeight(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: Tensor, T: Int, pool: ThreadPool = .shared) {
    let N = weight.shape[0], K = weight.shape[1]
    if weight.dtype == .f32 {
        let wp = weight.data.assumingMemoryBound(to: Float.self)
        pool.parallelFor(N, minChunk: 16) { r in
            BLAS.gemmABt(m: T, n: r.count, k: K, a: inp, lda: K, b: wp + r.lowerBound * K, ldb: K,
                         c: out + r.lowerBound, ldc: N)
        }
        return
    }
    let tileRows = max(16, min(256, (1 << 20) / max(K, 1)))
    let rowBytes = weight.dtype.byteCount(elements: K)
    pool.parallelFor(N, minChunk: 16) { r in
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: tileRows * K)
        defer { scratch.deallocate() }
        var r0 = r.lowerBound
        while r0 < r.upperBound {
            let rows = min(tileRows, r.upperBound - r0)
            convertToFloat(dtype: weight.dtype, src: weight.data + r0 * rowBytes, dst: scratch, count: rows * K)
            BLAS.gemmABt(m: T, n: rows, k: K, a: inp, lda: K, b: scratch, ldb: K, c: out + r0, ldc: N)
            r0 += rows
        }
    }
}
