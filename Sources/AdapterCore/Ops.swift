import Foundation
import CKernels

/// RMSNorm over rows: out[t] = inp[t] * rsqrt(mean(inp[t]^2) + eps) * weight, as LLaMA computes it in f32.
/// `weight` may be any float dtype; it is read through `weightF32` (converted once by the caller).
public func rmsnormForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           T: Int, C: Int, eps: Float) {
    for t in 0..<T {
        let x = inp + t * C, o = out + t * C
        let ss = ck_dot_f32(x, x, C)
        let r = 1 / (ss / Float(C) + eps).squareRoot()
        for i in 0..<C { o[i] = (x[i] * r) * weight[i] }
    }
}

/// LLaMA-1 rotary embedding on adjacent pairs (Meta layout), in place, for rows at positions `startPos..<startPos+T`.
/// `x` is [T, nHeads, headDim]; `cos`/`sin` are [maxPos, headDim/2] tables from `RopeTable`.
public func ropeForward(_ x: UnsafeMutablePointer<Float>, T: Int, nHeads: Int, headDim: Int, startPos: Int, table: RopeTable) {
    let half = headDim / 2
    for t in 0..<T {
        let c = table.cos + (startPos + t) * half, s = table.sin + (startPos + t) * half
        for h in 0..<nHeads {
            let v = x + (t * nHeads + h) * headDim
            for i in 0..<half {
                let a = v[2 * i], b = v[2 * i + 1]
                v[2 * i] = a * c[i] - b * s[i]
                v[2 * i + 1] = a * s[i] + b * c[i]
            }
        }
    }
}

/// Precomputed rotary tables, computed in f32 the way the official `precompute_freqs_cis` does.
public final class RopeTable: @unchecked Sendable {
    /// cos of angle, [maxPos, headDim/2].
    public let cos: UnsafeMutablePointer<Float>
    /// sin of angle, [maxPos, headDim/2].
    public let sin: UnsafeMutablePointer<Float>
    /// Number of positions covered.
    public let maxPos: Int

    /// Builds tables for `maxPos` positions with base `theta`.
    public init(headDim: Int, maxPos: Int, theta: Float) {
        let half = headDim / 2
        self.maxPos = maxPos
        cos = .allocate(capacity: maxPos * half)
        sin = .allocate(capacity: maxPos * half)
        var freqs = [Float](repeating: 0, count: half)
        for i in 0..<half {
            // torch: 1.0 / (theta ** (arange(0, dim, 2).float() / dim)), all in f32
            let e = Float(2 * i) / Float(headDim)
            freqs[i] = 1 / powf(theta, e)
        }
        for p in 0..<maxPos {
            for i in 0..<half {
                let angle = Float(p) * freqs[i]
                cos[p * half + i] = Foundation.cos(angle)
                sin[p * half + i] = Foundation.sin(angle)
            }
        }
    }

    deinit { cos.deallocate(); sin.deallocate() }
}

/// Numerically stable softmax in place over `n` values.
@inlinable
public func softmaxInPlace(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
    var m = -Float.infinity
    for i in 0..<n where x[i] > m { m = x[i] }
    var sum: Float = 0
    for i in 0..<n { let e = expf(x[i] - m); x[i] = e; sum += e }
    let inv = 1 / sum
    for i in 0..<n { x[i] *= inv }
}

/// SwiGLU gate: out = silu(a) * b, elementwise.
public func swigluForward(out: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>, n: Int) {
    for i in 0..<n {
        let x = a[i]
        out[i] = x / (1 + expf(-x)) * b[i]
    }
}

/// out += inp over n elements (residual connection).
@inlinable
public func addInPlace(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ n: Int) {
    ck_axpy_f32(1, inp, out, n)
}

/// Dot product of two f32 vectors (SIMD).
@inlinable
public func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    ck_dot_f32(a, b, n)
}

/// y += a * x over n elements (SIMD).
@inlinable
public func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    ck_axpy_f32(a, x, y, n)
}

/// One attention head over `count` positions: softmax(scale · q·K) · V, K/V rows `stride` floats apart.
/// `scores` (count floats) holds the attention probabilities afterwards, which the backward pass needs.
@inlinable
public func attendHead(q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, count: Int,
                       headDim: Int, stride: Int, scale: Float, scores: UnsafeMutablePointer<Float>,
                       out: UnsafeMutablePointer<Float>) {
    ck_attend_head(q, keys, values, count, headDim, stride, scale, scores, out)
}

/// Name of the SIMD level the C kernels use on this CPU.
public var simdLevel: String { String(cString: ck_simd_level()) }

/// LayerNorm over rows: out = (x - mean) / sqrt(var + eps) * weight + bias (biased variance, as PyTorch).
public func layerNormForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                             bias: UnsafePointer<Float>?, T: Int, C: Int, eps: Float) {
    for t in 0..<T {
        let x = inp + t * C, o = out + t * C
        var mean: Float = 0
        for i in 0..<C { mean += x[i] }
        mean /= Float(C)
        var variance: Float = 0
        for i in 0..<C { let d = x[i] - mean; variance += d * d }
        variance /= Float(C)
        let r = 1 / (variance + eps).squareRoot()
        if let bias {
            for i in 0..<C { o[i] = (x[i] - mean) * r * weight[i] + bias[i] }
        } else {
            for i in 0..<C { o[i] = (x[i] - mean) * r * weight[i] }
        }
    }
}

/// Exact GELU, x * Φ(x) with erf (PyTorch's default `nn.GELU()`), in place.
public func geluInPlace(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
    for i in 0..<n { let v = x[i]; x[i] = 0.5 * v * (1 + erff(v * 0.70710678118654752)) }
}

/// CLIP's QuickGELU, x * sigmoid(1.702 x), in place.
public func quickGeluInPlace(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
    for i in 0..<n { let v = x[i]; x[i] = v / (1 + expf(-1.702 * v)) }
}
