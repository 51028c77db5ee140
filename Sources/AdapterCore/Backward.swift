import Foundation

// Backward kernels, one per forward kernel, llm.c style: free functions over plain f32 buffers with the
// shapes in the signature. Every gradient is ACCUMULATED (`+=`) so residual branches and parameters used
// twice compose; the trainer zeroes gradient buffers once per step. Each doc comment says what the backward
// needs from its forward. Frozen weights get no gradient buffer (pass nil) but gradients still flow through
// them to their inputs. All of these are checked against central finite differences in BackwardTests.

// MARK: - Linear

/// Backward of `linearForward` (out[T, N] = inp[T, K] · W[N, K]ᵀ + bias[N]):
/// dInp[T, K] += dOut · W, dWeight[N, K] += dOutᵀ · inp, dBias[N] += Σ_t dOut[t].
/// `weight` may be stored in any dtype (frozen f16/bf16/quantized base weights): each thread takes a band of
/// input columns (aligned to the dtype's block size), converts W's rows tile by tile into its own f32 scratch
/// and multiplies with BLAS, so no f32 copy of W is ever made and threads never write the same element.
/// `dWeight` is the f32 gradient of the (dequantized) weight; trainable weights are f32.
/// Saved from the forward: `inp` (only needed when `dWeight` is requested).
public func linearBackward(dInp: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
                           dBias: UnsafeMutablePointer<Float>?, dOut: UnsafePointer<Float>, inp: UnsafePointer<Float>?,
                           weight: Tensor, T: Int, pool: ThreadPool = .shared) {
    precondition(weight.shape.count == 2, "linear weight must be 2-D")
    let N = weight.shape[0], K = weight.shape[1]
    if let dBias {
        for t in 0..<T {
            let row = dOut + t * N
            for n in 0..<N { dBias[n] += row[n] }
        }
    }
    if let dWeight {
        guard let inp else { preconditionFailure("linearBackward: dWeight needs the forward's input") }
        pool.parallelFor(N, minChunk: 16) { r in
            BLAS.gemmAtB(m: r.count, n: K, k: T, a: dOut + r.lowerBound, lda: N, b: inp, ldb: K,
                         c: dWeight + r.lowerBound * K, ldc: K, beta: 1)
        }
    }
    guard let dInp else { return }
    let bs = weight.dtype.blockSize
    let blocks = K / bs
    if weight.dtype == .f32 {
        let wp = weight.data.assumingMemoryBound(to: Float.self)
        pool.parallelFor(K, minChunk: 64) { r in
            BLAS.gemmAB(m: T, n: r.count, k: N, a: dOut, lda: N, b: wp + r.lowerBound, ldb: K,
                        c: dInp + r.lowerBound, ldc: K, beta: 1)
        }
        return
    }
    let rowBytes = weight.dtype.byteCount(elements: K)
    pool.parallelFor(blocks, minChunk: max(1, 64 / bs)) { r in
        let k0 = r.lowerBound * bs, band = r.count * bs
        let byteStart = r.lowerBound * weight.dtype.blockBytes
        let tileRows = max(16, min(N, (1 << 18) / max(band, 1)))
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: tileRows * band)
        defer { scratch.deallocate() }
        var n0 = 0
        while n0 < N {
            let rows = min(tileRows, N - n0)
            for i in 0..<rows {
                convertToFloat(dtype: weight.dtype, src: weight.data + (n0 + i) * rowBytes + byteStart,
                               dst: scratch + i * band, count: band)
            }
            BLAS.gemmAB(m: T, n: band, k: rows, a: dOut + n0, lda: N, b: scratch, ldb: band,
                        c: dInp + k0, ldc: K, beta: 1)
            n0 += rows
        }
    }
}

// MARK: - Norms

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

/// Backward of `layerNormForward` (out = (x − mean)·rstd·w + b, biased variance), rows of width C:
/// with n = (x − mean)·rstd and g = dout·w, dx += rstd·(g − mean(g) − n·mean(g·n)),
/// dWeight += Σ_t dout·n, dBias += Σ_t dout.
/// Saved from the forward: `inp` (mean and rstd are recomputed per row).
public func layerNormBackward(dInp: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>?,
                              dBias: UnsafeMutablePointer<Float>?, dOut: UnsafePointer<Float>, inp: UnsafePointer<Float>,
                              weight: UnsafePointer<Float>, T: Int, C: Int, eps: Float) {
    for t in 0..<T {
        let x = inp + t * C, dout = dOut + t * C, dx = dInp + t * C
        var mean: Float = 0
        for i in 0..<C { mean += x[i] }
        mean /= Float(C)
        var variance: Float = 0
        for i in 0..<C { let d = x[i] - mean; variance += d * d }
        variance /= Float(C)
        let rstd = 1 / (variance + eps).squareRoot()
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

// MARK: - Activations

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

/// Backward of `quickGeluInPlace` (x·σ(1.702x)), n elements: dInp += dout·(σ + 1.702·x·σ·(1 − σ)).
/// Saved from the forward: the pre-activation `inp`.
public func quickGeluBackward(dInp: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, inp: UnsafePointer<Float>, n: Int) {
    for i in 0..<n {
        let x = inp[i]
        let sig = 1 / (1 + expf(-1.702 * x))
        dInp[i] += dOut[i] * (sig + 1.702 * x * sig * (1 - sig))
    }
}

// MARK: - RoPE

/// Backward of `ropeForward`, in place on the gradient `dx` [T, nHeads, headDim]: a rotation's transpose is
/// the rotation by −angle, so (da, db) ← (da·cos + db·sin, −da·sin + db·cos) per adjacent pair.
/// Nothing is saved from the forward (the table only). In place, so it replaces rather than accumulates:
/// apply it to the gradient of the rotated q/k before adding into the projection's output gradient.
public func ropeBackward(_ dx: UnsafeMutablePointer<Float>, T: Int, nHeads: Int, headDim: Int, startPos: Int, table: RopeTable) {
    let half = headDim / 2
    for t in 0..<T {
        let c = table.cos + (startPos + t) * half, s = table.sin + (startPos + t) * half
        for h in 0..<nHeads {
            let v = dx + (t * nHeads + h) * headDim
            for i in 0..<half {
                let a = v[2 * i], b = v[2 * i + 1]
                v[2 * i] = a * c[i] + b * s[i]
                v[2 * i + 1] = b * c[i] - a * s[i]
            }
        }
    }
}

// MARK: - Loss

/// Cross-entropy of logits [T, V] against `targets` (T labels, already shifted so row t predicts targets[t]),
/// skipping rows whose target is `ignoreIndex` (the official loss ignores token id 0). Returns the mean loss
/// over the counted rows and, if `dLogits` is given, WRITES (not accumulates: it is where backward starts)
/// dLogits = (softmax − onehot)/count on counted rows and 0 on ignored rows. `dLogits` may be the same
/// buffer as `logits` (each row is read in full before it is written), which saves a [T, V] buffer.
/// With no counted row the loss is 0 and the gradient 0, as the official `output.mean() * 0`.
public func crossEntropyForwardBackward(logits: UnsafePointer<Float>, targets: [Int], V: Int, ignoreIndex: Int = 0,
                                        dLogits: UnsafeMutablePointer<Float>?) -> Float {
    let T = targets.count
    let count = targets.reduce(0) { $0 + ($1 == ignoreIndex ? 0 : 1) }
    var total: Double = 0
    let invCount = count > 0 ? 1 / Float(count) : 0
    for t in 0..<T {
        let row = logits + t * V
        let target = targets[t]
        if target == ignoreIndex {
            if let dLogits { (dLogits + t * V).update(repeating: 0, count: V) }
            continue
        }
        precondition(target >= 0 && target < V, "target \(target) outside the vocabulary of \(V)")
        var m = -Float.infinity
        for i in 0..<V where row[i] > m { m = row[i] }
        var sum: Float = 0
        for i in 0..<V { sum += expf(row[i] - m) }
        let logZ = m + logf(sum)
        total += Double(logZ - row[target])
        if let dLogits {
            let d = dLogits + t * V
            let inv = 1 / sum
            for i in 0..<V { d[i] = expf(row[i] - m) * inv * invCount }
            d[target] -= invCount
        }
    }
    return count > 0 ? Float(total / Double(count)) : 0
}
