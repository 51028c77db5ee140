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

/// Backward of `rmsnormForward` (out = x · r · w with r = rsqrt(mean(x²) + eps)), rows of width C:
/// dx_i += r·w_i·dout_i − x_i · r³/C · Σ_j w_j·dout_j·x_j, dWeight_i += Σ_t dout_i·x_i·r.
/// Saved from the forward: `inp` (r is recomputed per row, C multiply-adds, cheaper than storing it).
public func rmsnormBackward(dInp: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>?,
                            dOut: UnsafePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                            T: Int, C: Int, eps: Float) {
    for t in 0..<T {
        let x = inp + t * C, dout = dOut + t * C, dx = dInp + t * C
        let r = 1 / (dot(x, x, C) / Float(C) + eps).squareRoot()
        var s: Float = 0
        for i in 0..<C { s += weight[i] * dout[i] * x[i] }
        let k = s * r * r * r / Float(C)
        for i in 0..<C { dx[i] += r * weight[i] * dout[i] - k * x[i] }
        if let dWeight {
            for i in 0..<C { dWeight[i] += dout[i] * x[i] * r }
        }
    }
}

/// LLaMA-1 rotary embedding on adjacent pairs (Meta layout), in place, for rows at positions `startPos..<startPos+T`.
/// `x` is [T, nHeads, headDim]; `cos`/`sin` are [maxPos, headDim/2] tables from `RopeTable`.
public func ropeForward(_ x: UnsafeMutablePointer<Float>, T: Int, nHeads: Int, headDim: Int, startPos: Int, table: RopeTable) {
    rotatePairs(x, T: T, nHeads: nHeads, headDim: headDim, startPos: startPos, table: table, sinSign: 1)
}

/// Backward of `ropeForward`, in place on the gradient `dx` [T, nHeads, headDim]: a rotation's transpose is
/// the rotation by −angle, so (da, db) ← (da·cos + db·sin, −da·sin + db·cos) per adjacent pair.
/// Nothing is saved from the forward (the table only). In place, so it replaces rather than accumulates:
/// apply it to the gradient of the rotated q/k before adding into the projection's output gradient.
public func ropeBackward(_ dx: UnsafeMutablePointer<Float>, T: Int, nHeads: Int, headDim: Int, startPos: Int, table: RopeTable) {
    rotatePairs(dx, T: T, nHeads: nHeads, headDim: headDim, startPos: startPos, table: table, sinSign: -1)
}

/// Rotates each adjacent pair (a, b) by the position's angle θ: (a·cos − b·sin, a·sin + b·cos) with
/// sin = `sinSign`·sin θ (−1 rotates back, the forward's transpose).
private func rotatePairs(_ x: UnsafeMutablePointer<Float>, T: Int, nHeads: Int, headDim: Int, startPos: Int, table: RopeTable,
                         sinSign: Float) {
    let half = headDim / 2
    for t in 0..<T {
        let c = table.cos + (startPos + t) * half, s = table.sin + (startPos + t) * half
        for h in 0..<nHeads {
            let v = x + (t * nHeads + h) * headDim
            for i in 0..<half {
                let a = v[2 * i], b = v[2 * i + 1], sn = sinSign * s[i]
                v[2 * i] = a * c[i] - b * sn
                v[2 * i + 1] = a * sn + b * c[i]
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

/// Numerically stable softmax in place over `n` values (the attention kernels' own, `ck_softmax`).
@inlinable
public func softmaxInPlace(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
    ck_softmax(x, n)
}

/// SwiGLU gate: out = silu(a) * b, elementwise (`ck_swiglu`: vector e^x, bit for bit the scalar loop's result).
public func swigluForward(out: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>, n: Int) {
    ck_swiglu(out, a, b, n)
}

/// Backward of `swigluForward` (out = silu(a)·b, silu(a) = a·σ(a)), n elements:
/// dA += dout·b·σ(a)·(1 + a·(1 − σ(a))), dB += dout·silu(a).
/// Saved from the forward: both inputs `a` (the w1 output) and `b` (the w3 output).
public func swigluBackward(dA: UnsafeMutablePointer<Float>?, dB: UnsafeMutablePointer<Float>?, dOut: UnsafePointer<Float>,
                           a: UnsafePointer<Float>, b: UnsafePointer<Float>, n: Int) {
    for i in 0..<n {
        let x = a[i]
        let sig = 1 / (1 + expf(-x))
        dA?[i] += dOut[i] * b[i] * sig * (1 + x * (1 - sig))
        dB?[i] += dOut[i] * x * sig
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

/// Checks LLAMA_ADAPTER_SIMD (a cap on the kernels' instruction set, lower only): an unknown name, or a level of
/// another architecture, is an error rather than a silent fall back to the best path.
public func checkSIMDCap(environment: [String: String] = ProcessInfo.processInfo.environment) throws {
    guard let v = environment["LLAMA_ADAPTER_SIMD"], !v.isEmpty else { return }
    #if arch(x86_64)
    let ours = ["generic", "avx2", "avx512", "vnni"]
    #elseif arch(arm64)
    let ours = ["generic", "neon", "dotprod"]
    #else
    let ours = ["generic"]
    #endif
    guard ours.contains(v) else {
        throw AdapterError.invalidArgument("LLAMA_ADAPTER_SIMD=\(v) is not a level of this CPU's architecture (expected one of \(ours.joined(separator: ", ")))")
    }
}

/// Mean and 1/sqrt(biased variance + eps) of one row, shared by LayerNorm's forward and backward.
@inline(__always)
private func layerNormStatistics(_ x: UnsafePointer<Float>, _ C: Int, _ eps: Float) -> (mean: Float, rstd: Float) {
    var mean: Float = 0
    for i in 0..<C { mean += x[i] }
    mean /= Float(C)
    var variance: Float = 0
    for i in 0..<C { let d = x[i] - mean; variance += d * d }
    variance /= Float(C)
    return (mean, 1 / (variance + eps).squareRoot())
}

/// LayerNorm over rows: out = (x - mean) / sqrt(var + eps) * weight + bias (biased variance, as PyTorch).
public func layerNormForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                             bias: UnsafePointer<Float>?, T: Int, C: Int, eps: Float) {
    for t in 0..<T {
        let x = inp + t * C, o = out + t * C
        let (mean, r) = layerNormStatistics(x, C, eps)
        if let bias {
            for i in 0..<C { o[i] = (x[i] - mean) * r * weight[i] + bias[i] }
        } else {
            for i in 0..<C { o[i] = (x[i] - mean) * r * weight[i] }
        }
    }
}

/// Backward of `layerNormForward` (out = (x − mean)·rstd·w + b, biased variance), rows of width C:
/// with n = (x − mean)·rstd and g = dout·w, dx += rstd·(g − mean(g) − n·mean(g·n)),
/// dWeight += Σ_t dout·n, dBias += Σ_t dout.
/// Saved from the forward: `inp` (mean and rstd are recomputed per row).
public func layerNormBackward(dInp: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>?,
                              dBias: UnsafeMutablePointer<Float>?, dOut: UnsafePointer<Float>, inp: UnsafePointer<Float>,
                              weight: UnsafePointer<Float>, T: Int, C: Int, eps: Float) {
    for t in 0..<T {
        let x = inp + t * C, dout = dOut + t * C, dx = dInp + t * C
        let (mean, rstd) = layerNormStatistics(x, C, eps)
        var gMean: Float = 0, gnMean: Float = 0
        for i in 0..<C {
            let g = dout[i] * weight[i], n = (x[i] - mean) * rstd
            gMean += g
            gnMean += g * n
        }
        gMean /= Float(C)
        gnMean /= Float(C)
        for i in 0..<C {
            let g = dout[i] * weight[i], n = (x[i] - mean) * rstd
            dx[i] += rstd * (g - gMean - n * gnMean)
            dWeight?[i] += dout[i] * n
            dBias?[i] += dout[i]
        }
    }
}

/// Exact GELU, x * Φ(x) with erf (PyTorch's default `nn.GELU()`), in place.
public func geluInPlace(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
    for i in 0..<n { let v = x[i]; x[i] = 0.5 * v * (1 + erff(v * 0.70710678118654752)) }
}

/// GELU with the tanh approximation (PyTorch `gelu(x, approximate="tanh")`, transformers' `gelu_pytorch_tanh`),
/// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), in place.
public func geluTanhInPlace(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
    let k: Float = 0.7978845608028654, c: Float = 0.044715
    for i in 0..<n { let v = x[i]; x[i] = 0.5 * v * (1 + tanhf(k * (v + c * v * v * v))) }
}

/// Backward of `geluInPlace` (exact GELU, x·Φ(x)), n elements: dInp += dout·(Φ(x) + x·φ(x)).
/// Saved from the forward: the pre-activation `inp` (the forward works in place, so keep a copy).
public func geluBackward(dInp: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, inp: UnsafePointer<Float>, n: Int) {
    let invSqrt2: Float = 0.70710678118654752, invSqrt2Pi: Float = 0.39894228040143268
    for i in 0..<n {
        let x = inp[i]
        let cdf = 0.5 * (1 + erff(x * invSqrt2))
        let pdf = invSqrt2Pi * expf(-0.5 * x * x)
        dInp[i] += dOut[i] * (cdf + x * pdf)
    }
}

/// CLIP's QuickGELU, x * sigmoid(1.702 x), in place (`ck_quick_gelu`: x / (1 + e^(-1.702x)), vector e^x).
public func quickGeluInPlace(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
    ck_quick_gelu(x, n)
}

/// Backward of `quickGeluInPlace` (x·σ(1.702x)), n elements: dInp += dout·(σ + 1.702·x·σ·(1 − σ)).
/// Saved from the forward: the pre-activation `inp`.
public func quickGeluBackward(dInp: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, inp: UnsafePointer<Float>, n: Int) {
    for i in 0..<n {
        let x = inp[i]
        let sig = 1 / (1 + expf(-1.702 * x))
        dInp[i] += dOut[i] * (sig + 1.702 * x * sig * (1 - sig))
    }
}
