#if canImport(Accelerate)
import Accelerate
#else
import CBLAS
#endif

/// Thin wrappers over CBLAS so the rest of the code does not care whether OpenBLAS or Accelerate is underneath.
public enum BLAS {
    /// Makes BLAS single-threaded: our own pool splits the work, and two pools on two cores fight (DESIGN.md section 5).
    public static func useSingleThread() {
        #if !canImport(Accelerate)
        openblas_set_num_threads(1)
        #endif
    }

    /// C[M,N] (row stride ldc) = alpha * A[M,K] * B[N,K]^T + beta * C; all row-major f32.
    @inlinable
    public static func gemmABt(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                               b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int,
                               alpha: Float = 1, beta: Float = 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k), alpha,
                    a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// C[M,N] = alpha * A[M,K] * B[K,N] + beta * C; all row-major f32.
    @inlinable
    public static func gemmAB(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                              b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int,
                              alpha: Float = 1, beta: Float = 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), alpha,
                    a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// C[M,N] = alpha * A[K,M]^T * B[K,N] + beta * C; all row-major f32 (used by weight gradients).
    @inlinable
    public static func gemmAtB(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                               b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int,
                               alpha: Float = 1, beta: Float = 0) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), alpha,
                    a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}
