import CKernels

/// out[T, N] = inp[T, K] · W[N, K]^T (+ bias[N]), where W keeps its stored dtype.
/// Decoding (T small) uses SIMD mat-vec kernels that read each weight once; prefill goes through `gemmWeight`,
/// which never needs a permanent f32 copy of f16 or quantized weights.
/// `oneSequence` says the T rows are positions of one sequence (a prefill), not T sequences decoding together:
/// float weights then take the GEMM kernel from 2 rows on (its results do not have to equal a lone mat-vec's).
public func linearForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: Tensor,
                          bias: UnsafePointer<Float>? = nil, T: Int, activations: ActivationPrecision = .f32,
                          oneSequence: Bool = false, pool: ThreadPool = .shared) {
    precondition(weight.shape.count == 2, "linear weight must be 2-D")
    let N = weight.shape[0]
    if T <= matvecBatchLimit && !(oneSequence && prefersGemm(weight, T: T)) {
        matvecGroup(outs: [out], x: inp, T: T, weights: [weight], activations: activations, pool: pool)
    } else {
        gemmWeight(out: out, inp: inp, weight: weight, T: T, activations: activations, pool: pool)
    }
    if let bias {
        for t in 0..<T { ck_axpy_f32(1, bias, out + t * N, N) }
    }
}

/// True for weights whose few-row products are faster through the GEMM kernel than through per-row mat-vecs:
/// float types (the quantized ones have multi-vector kernels that expand each block once for all rows). (With
/// 8-bit activations, Q4_0/Q4_1/Q8_0 take the integer GEMM from 2 rows on, on
/// AVX-512 VNNI machines; see `matvecGroup`.)
public func prefersGemm(_ weight: Tensor, T: Int) -> Bool {
    T > 1 && [.f16, .bf16, .f32].contains(weight.dtype)
}

/// The kind `ck_gemm_q8act` takes for this weight (0: Q4_0, 1: Q4_1, 2: Q8_0, 3: Q4_K, 4: Q6_K), when this CPU runs
/// it; nil otherwise. The K-quants only for wide rows (K ≥ 2048, as 7B's): their panels hold products of the ggml
/// fields (d·sc, dmin·m), which cannot be turned back into ggml rows for the f32 GEMM that narrow matrices' prefill
/// takes.
func int8GemmKind(_ weight: Tensor) -> Int32? {
    let kind: Int32
    let K = weight.shape[1]
    switch weight.dtype {
    case .q4_0: kind = 0
    case .q4_1: kind = 1
    case .q8_0: kind = 2
    case .q4_K where K >= 2048 && K % 256 == 0: kind = 3
    case .q6_K where K >= 2048 && K % 256 == 0: kind = 4
    default: return nil
    }
    guard K % 32 == 0, int8GemmAvailable else { return nil }
    return kind
}

/// Whether the f32-activation Q4/Q8 kernels read per-32 block sums of x (not on AVX-512: they are then skipped).
let quantKernelsUseBlockSums: Bool = ck_quant_uses_block_sums() != 0

/// Whether the integer GEMM runs on this CPU (a call over no rows does nothing and says so).
let int8GemmAvailable: Bool = ck_gemm_q8act(0, nil, nil, 0, 32, 0, 0, nil, nil, nil, 0, nil, 0) != 0

/// Runs the integer GEMM over rows `r0..<r1` of `weight`, reading its packed panels where it has them.
@inline(__always)
func int8Gemm(kind: Int32, weight w: Tensor, r0: Int, r1: Int, xq: UnsafePointer<Int8>, xd: UnsafePointer<Float>,
              xs: UnsafePointer<Int32>, halves: UnsafePointer<Int32>?, T: Int, levels: Int = 1,
              out: UnsafeMutablePointer<Float>) {
    let N = w.shape[0], K = w.shape[1]
    _ = ck_gemm_q8act_levels(kind, w.data, w.int8Panels?.base, w.int8Panels == nil ? 0 : N / 16 * 16,
                             K, r0, r1, xq, xd, xs, halves, T, levels, out, N)
}

/// Runs `body` with the Q6_K GEMM's activation sums per 16 columns (`ck_q8act_half_sums`) of `rows` quantized rows
/// of K bytes, computed once per product rather than once per chunk (in temporary, usually stack, memory: decoding
/// calls this per matrix); nil without a Q6_K weight (`kinds`: the weights' GEMM kinds).
func withQ6KHalfSums<Result>(_ xq: UnsafePointer<Int8>, rows: Int, K: Int, kinds: [Int32?],
                             _ body: (UnsafePointer<Int32>?) -> Result) -> Result {
    guard kinds.contains(4) else { return body(nil) }
    return withUnsafeTemporaryAllocation(of: Int32.self, capacity: rows * K / 16) { h in
        ck_q8act_half_sums(xq, rows * K, h.baseAddress!)
        return body(UnsafePointer(h.baseAddress!))
    }
}

/// Quantizes T rows of K floats into `levels` int8 levels each (token t at t·levels·K, a block's levels side by
/// side), with their block scales and sums.
func quantizeActivations(_ x: UnsafePointer<Float>, T: Int, K: Int, levels: Int, xq: UnsafeMutablePointer<Int8>,
                         xd: UnsafeMutablePointer<Float>, xs: UnsafeMutablePointer<Int32>) {
    let nb = K / 32
    for t in 0..<T {
        ck_quantize_x_q8_levels(x + t * K, levels, xq + t * levels * K, xd + t * levels * nb, xs + t * levels * nb, K)
    }
}

/// Where a weight's panels repacked for the integer GEMM live: a byte range of a storage (one arena per model, so
/// small matrices do not each round up to a huge page).
public struct Int8Panels: @unchecked Sendable {
    /// Backing bytes.
    public let storage: Storage
    /// First byte of this weight's panels inside `storage`.
    public let byteOffset: Int
    /// The panels' first byte.
    public var base: UnsafeRawPointer { UnsafeRawPointer(storage.base + byteOffset) }
}

extension Tensor {
    /// Bytes `packedForInt8` writes for this weight: its whole 16-row panels, the same size as those rows (Q4_K:
    /// 148 bytes per row and 256 columns against 144, Q6_K: 212 against 210); 0 when it is not packed (not
    /// Q4_0/Q4_1/Q8_0/wide Q4_K or Q6_K, fewer than 16 rows, or no AVX-512 VNNI).
    public var int8PanelBytes: Int {
        guard shape.count == 2, let kind = int8GemmKind(self) else { return 0 }
        return shape[0] / 16 * ck_q8act_panel_bytes(kind, shape[1])
    }

    /// This Q4_0/Q4_1/Q8_0 (or wide Q4_K/Q6_K) weight with its whole 16-row panels repacked for the `--int8-activations` integer GEMM,
    /// which then reads each panel as it is instead of rebuilding it from the ggml rows on every call (so one
    /// decoding token also takes the GEMM: it multiplies 16 rows per instruction where the per-row kernel takes one).
    /// The panels go to `arena` at `offset` (`int8PanelBytes` bytes; nil: storage of their own). The rows of a
    /// file-mapped weight are then given back to the system (read again from the file by the exact paths, if ever
    /// used). Unchanged for other dtypes, or on CPUs without AVX-512 VNNI.
    public func packedForInt8(into arena: Storage? = nil, at offset: Int = 0, pool: ThreadPool = .shared) -> Tensor {
        let bytes = int8PanelBytes
        guard bytes > 0, int8Panels == nil, let kind = int8GemmKind(self) else { return self }
        let target = arena ?? Storage(uninitializedBytes: bytes, hugePages: bytes >= 32 << 20)
        precondition(offset >= 0 && offset + bytes <= target.byteCount, "packed panels outside their arena")
        let K = shape[1], dst = target.base + offset
        pool.parallelForDynamic(shape[0] / 16, chunk: 8) { r, _ in
            _ = ck_q8act_pack(kind, data, K, r.lowerBound, r.upperBound, dst)
        }
        storage.releaseResidentPages(offset: byteOffset, count: shape[0] / 16 * 16 * dtype.byteCount(elements: K))
        var copy = self
        copy.int8Panels = Int8Panels(storage: target, byteOffset: offset)
        return copy
    }
}

/// out[T, N] = x̂ · Wᵀ with x̂ each row of `inp` quantized to `levels` 8-bit levels per block (one: the opt-in
/// `--int8-activations` mode, llama.cpp's method for quantized weights; three: f32 precision): integer products
/// through AVX-512 VNNI, 16 weight rows per panel. False (nothing written) when the weight's type or the CPU has no
/// such kernel.
func gemmInt8(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: Tensor, T: Int, levels: Int = 1,
              pool: ThreadPool) -> Bool {
    guard let kind = int8GemmKind(weight) else { return false }
    let N = weight.shape[0], K = weight.shape[1], nb = K / 32
    let R = T * levels
    let xq = UnsafeMutablePointer<Int8>.allocate(capacity: R * K)
    let xd = UnsafeMutablePointer<Float>.allocate(capacity: R * nb)
    let xs = UnsafeMutablePointer<Int32>.allocate(capacity: R * nb)
    defer { xq.deallocate(); xd.deallocate(); xs.deallocate() }
    pool.parallelFor(T) { r in
        quantizeActivations(inp + r.lowerBound * K, T: r.count, K: K, levels: levels, xq: xq + r.lowerBound * levels * K,
                            xd: xd + r.lowerBound * levels * nb, xs: xs + r.lowerBound * levels * nb)
    }
    withQ6KHalfSums(xq, rows: R, K: K, kinds: [kind]) { halves in
        // Chunks of 64 rows (four panels), claimed by whichever thread is free.
        pool.parallelForDynamic(N, chunk: 64) { r, _ in
            int8Gemm(kind: kind, weight: weight, r0: r.lowerBound, r1: r.upperBound, xq: xq, xd: xd, xs: xs, halves: halves,
                     T: T, levels: levels, out: out)
        }
    }
    return true
}

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

/// Several mat-vecs on the same input in one pool job: y_i = W_i · x. Decoding a small model is bound by
/// the number of thread hand-offs as much as by bandwidth, so wq/wk/wv (and w1/w3) share one hand-off.
public func matvecGroup(outs: [UnsafeMutablePointer<Float>], x: UnsafePointer<Float>, weights: [Tensor],
                        activations: ActivationPrecision = .f32, pool: ThreadPool = .shared) {
    matvecGroup(outs: outs, x: x, T: 1, weights: weights, activations: activations, pool: pool)
}

/// Rows a batched mat-vec takes at most (`linearForward` switches to GEMM above it). Up to this many rows,
/// every row is computed by the same kernel, in the same order, as a lone mat-vec, so a sequence decoded in a
/// batch gets bit for bit the logits it gets alone.
public let matvecBatchLimit = 16

/// `T` mat-vecs per weight in one pool job: y_i[t] = W_i · x[t] (x rows of K floats, y_i rows of N_i floats).
/// Each thread walks its weight rows in tiles that stay in cache while every input row passes over them,
/// so the weights are read from memory once per step however many sequences decode together.
public func matvecGroup(outs: [UnsafeMutablePointer<Float>], x: UnsafePointer<Float>, T: Int, weights: [Tensor],
                        activations: ActivationPrecision = .f32, pool: ThreadPool = .shared) {
    let K = weights[0].shape[1]
    precondition(weights.allSatisfy { $0.shape[1] == K }, "grouped mat-vecs need one input width")
    precondition(T >= 1, "a mat-vec needs at least one row")
    var starts = [0]
    for w in weights { starts.append(starts.last! + w.shape[0]) }
    let total = starts.last!
    let legacyQuant = weights.contains { [.q4_0, .q4_1, .q8_0].contains($0.dtype) }
    let int8 = activations == .int8 && weights.contains(where: hasInt8Rows) && K % 32 == 0
    // Integer rows per input row: one 8-bit level (--int8-activations), or three (f32 precision, see `ActivationPrecision`).
    let levels = activations == .int8 ? 1 : 3
    // Which weights take the integer GEMM: with 8-bit activations, those of several rows (sequences decoding together,
    // a short prompt: its panel of 16 weight rows is built once for all of them, SmolLM2 batch-8 step 33 -> 19 ms) or
    // with packed panels (`packedForInt8`: then every row count takes the GEMM, so batched = alone bit for bit; a
    // lone row without them keeps the mat-vec, 4.6 vs 7 ms per SmolLM2 token); at f32 precision, those with packed
    // panels (three levels through panels built per call lose to f32 FMAs: SmolLM2 135 vs 206 tok/s).
    let viaGemm: [Int32?] = weights.map { w in
        guard K % 32 == 0, let kind = int8GemmKind(w) else { return nil }
        if activations == .int8 { return T > 1 || w.int8Panels != nil ? kind : nil }
        return w.int8Panels != nil ? kind : nil
    }
    let quantize = int8 || viaGemm.contains { $0 != nil }
    let R = quantize ? T * levels : 0
    let blocks = max(1, K / 32)
    // Rows per tile: about 64 KB of weights, which stay in L1/L2 while the T input rows pass.
    let maxRowBytes = weights.map { $0.dtype.byteCount(elements: K) }.max() ?? 1
    let tile = T == 1 ? Int.max : max(1, 65536 / max(maxRowBytes, 1))
    withUnsafeTemporaryAllocation(of: Float.self, capacity: blocks * (T + R)) { sums in
        let xs = sums.baseAddress!, xd = xs + blocks * T
        withUnsafeTemporaryAllocation(of: Int8.self, capacity: max(1, K * R)) { q8 in
          withUnsafeTemporaryAllocation(of: Int32.self, capacity: max(1, blocks * R)) { isum in
                let xq = q8.baseAddress!, isums = isum.baseAddress!
                if quantize { quantizeActivations(x, T: T, K: K, levels: levels, xq: xq, xd: xd, xs: isums) }
                withQ6KHalfSums(xq, rows: R, K: K, kinds: viaGemm) { halves in
                    if legacyQuant && !int8 && quantKernelsUseBlockSums {
                        for t in 0..<T { ck_block_sums32(x + t * K, xs + t * blocks, K) }
                    }
                    // Chunks of about 256 KB of weights (at most 16 per thread), claimed by whichever thread is free:
                    // a mat-vec streams memory, and a static half each stalls the step on the slower core.
                    let totalBytes = weights.reduce(0) { $0 + $1.dtype.byteCount(elements: K) * $1.shape[0] }
                    let threads = pool.activeThreadCount
                    let chunks = min(16 * threads, max(threads, totalBytes / (256 << 10)))
                    var chunk = max(max(1, 16384 / max(K, 1)), ((total + chunks - 1) / chunks + 3) / 4 * 4)
                    // The integer GEMM takes rows 16 at a time (one panel).
                    if viaGemm.contains(where: { $0 != nil }) { chunk = (chunk + 15) / 16 * 16 }
                    pool.parallelForDynamic(total, chunk: chunk) { r, _ in
                        for (i, w) in weights.enumerated() {
                            let lo = max(r.lowerBound, starts[i]) - starts[i], hi = min(r.upperBound, starts[i + 1]) - starts[i]
                            guard lo < hi else { continue }
                            let N = w.shape[0]
                            if let kind = viaGemm[i] {
                                int8Gemm(kind: kind, weight: w, r0: lo, r1: hi, xq: xq, xd: xd, xs: isums, halves: halves, T: T,
                                         levels: levels, out: outs[i])
                                continue
                            }
                            if T > 1, !int8, matmulRows(out: outs[i], x: x, xsum: xs, blocks: blocks, T: T, weight: w, rows: lo..<hi) { continue }
                            var a = lo
                            while a < hi {
                                let b = min(hi, a + min(tile, hi - a))
                                for t in 0..<T {
                                    if int8 {
                                        let q = Int8Activations(qs: xq + t * K, d: xd + t * blocks, sums: isums + t * blocks)
                                        if matvecRowsInt8(out: outs[i] + t * N, x: q, weight: w, rows: a..<b) { continue }
                                    }
                                    matvecRows(out: outs[i] + t * N, x: x + t * K, xsum: xs + t * blocks, weight: w, rows: a..<b)
                                }
                                a = b
                            }
                        }
                    }
                }
          }
        }
    }
}

/// Precision of the activation vector in mat-vecs against quantized weights (Q4_0/Q4_1/Q8_0; with `.int8`, also the
/// K-quants' decode rows on AVX-512 VNNI CPUs).
public enum ActivationPrecision: Sendable {
    /// Activations at f32 precision (default). Against weights without packed panels: f32 FMAs, matching a
    /// dequantized f32 reference to rounding. Against Q4_0/Q4_1/Q8_0 weights with packed panels (`Tensor.packedForInt8`,
    /// AVX-512 VNNI CPUs): every block of 32 activations is split into three 8-bit levels (x = Σ q_l·d_l to 1/254³ ≈ 2^-24
    /// of the block's largest magnitude) whose exact integer products are scaled and added per block in f32, as close to a float64
    /// reference as f32 FMAs are (SmolLM2, 66 teacher-forced tokens: mean |Δ log-probability| 1.9e-6 vs 1.1–2.2e-6)
    /// at integer speed; a prefill converts narrow matrices' panels to f32 for the f32 GEMM instead.
    case f32
    /// Activations quantized to 8-bit blocks, integer dot products (llama.cpp's method): faster, ~0.4%
    /// relative error per activation; opt-in (`--int8-activations`).
    case int8
}

/// An activation vector quantized to 8-bit blocks of 32.
struct Int8Activations {
    let qs: UnsafePointer<Int8>
    let d: UnsafePointer<Float>
    let sums: UnsafePointer<Int32>
}

/// Integer rows for Q4_0/Q4_1/Q8_0, and Q4_K/Q5_K/Q6_K with AVX-512 VNNI; false otherwise (the caller falls back to f32).
@inline(__always)
func matvecRowsInt8(out y: UnsafeMutablePointer<Float>, x: Int8Activations, weight: Tensor, rows: Range<Int>) -> Bool {
    let K = weight.shape[1], w = weight.data, a = rows.lowerBound, b = rows.upperBound
    switch weight.dtype {
    case .q4_0: ck_matvec_q4_0_q8(w, x.qs, x.d, x.sums, y, K, a, b)
    case .q4_1: ck_matvec_q4_1_q8(w, x.qs, x.d, x.sums, y, K, a, b)
    case .q8_0: ck_matvec_q8_0_q8(w, x.qs, x.d, x.sums, y, K, a, b)
    case .q4_K: return ck_matvec_q4_K_q8(w, x.qs, x.d, x.sums, y, K, a, b) != 0
    case .q5_K: return ck_matvec_q5_K_q8(w, x.qs, x.d, x.sums, y, K, a, b) != 0
    case .q6_K: return ck_matvec_q6_K_q8(w, x.qs, x.d, y, K, a, b) != 0
    default: return false
    }
    return true
}

/// Whether `matvecRowsInt8` has integer rows for this weight on this CPU (Q4_0/Q4_1/Q8_0 everywhere; the
/// K-quants with AVX-512 VNNI).
func hasInt8Rows(_ w: Tensor) -> Bool {
    switch w.dtype {
    case .q4_0, .q4_1, .q8_0: return true
    case .q4_K, .q5_K, .q6_K: return int8GemmAvailable
    default: return false
    }
}

/// Rows `rows` of y[t] = W · x[t] for T vectors with kernels that expand each weight block once for all of
/// them (Q4_0/Q4_1/Q8_0); false for other dtypes (the caller runs one mat-vec per vector over cached tiles).
@inline(__always)
func matmulRows(out y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, xsum: UnsafePointer<Float>, blocks: Int, T: Int,
                weight: Tensor, rows: Range<Int>) -> Bool {
    let N = weight.shape[0], K = weight.shape[1], w = weight.data, a = rows.lowerBound, b = rows.upperBound
    switch weight.dtype {
    case .q4_0: ck_matmul_q4_0(w, x, K, xsum, blocks, y, N, T, K, a, b)
    case .q4_1: ck_matmul_q4_1(w, x, K, xsum, blocks, y, N, T, K, a, b)
    case .q8_0: ck_matmul_q8_0(w, x, K, xsum, blocks, y, N, T, K, a, b)
    default: return false
    }
    return true
}

/// Rows `rows` of y = W · x on the calling thread (xsum: per-32 block sums of x for Q4/Q8 kernels).
@inline(__always)
func matvecRows(out y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, xsum: UnsafePointer<Float>, weight: Tensor, rows: Range<Int>) {
    let K = weight.shape[1], w = weight.data, a = rows.lowerBound, b = rows.upperBound
    switch weight.dtype {
    case .f32: ck_matvec_f32(w.assumingMemoryBound(to: Float.self), x, y, K, a, b)
    case .f16: ck_matvec_f16(w.assumingMemoryBound(to: UInt16.self), x, y, K, a, b)
    case .bf16: ck_matvec_bf16(w.assumingMemoryBound(to: UInt16.self), x, y, K, a, b)
    case .q4_0: ck_matvec_q4_0(w, x, xsum, y, K, a, b)
    case .q4_1: ck_matvec_q4_1(w, x, xsum, y, K, a, b)
    case .q8_0: ck_matvec_q8_0(w, x, xsum, y, K, a, b)
    case .q4_K: ck_matvec_q4_K(w, x, y, K, a, b)
    case .q5_K: ck_matvec_q5_K(w, x, y, K, a, b)
    case .q6_K: ck_matvec_q6_K(w, x, y, K, a, b)
    }
}

/// y[N] = W[N, K] · x[K], rows split over the pool.
public func matvec(out y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, weight: Tensor, pool: ThreadPool = .shared) {
    matvecGroup(outs: [y], x: x, weights: [weight], pool: pool)
}

/// GEMM against a weight of any dtype: our own kernel (`ck_gemm_f16`/`ck_gemm_f32`, every SIMD path) on row chunks
/// claimed by free threads, each token's outputs computed alone (the same whatever else shares the call); dtypes
/// other than f16/f32 are converted chunk by chunk into per-thread f32 panels first. With `activations: .int8`, Q4_0/Q4_1/Q8_0 take the integer
/// GEMM where the CPU has one (`gemmInt8`).
public func gemmWeight(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: Tensor, T: Int,
                       activations: ActivationPrecision = .f32, pool: ThreadPool = .shared) {
    if activations == .int8 && gemmInt8(out: out, inp: inp, weight: weight, T: T, pool: pool) { return }
    // Packed weights at f32 precision: wide rows through the three-level integer GEMM, narrow ones converted from
    // their panels for the f32 GEMM, whichever measured faster (64-token prefill, tok/s: 7B Q4_0 16.0 vs 12.6,
    // Q8_0 14.8 vs 12.2; SmolLM2, K 576 and 1536, 580 vs 700 at 128 tokens).
    if activations == .f32 && weight.int8Panels != nil && weight.shape[1] >= 2048
        && gemmInt8(out: out, inp: inp, weight: weight, T: T, levels: 3, pool: pool) { return }
    let N = weight.shape[0], K = weight.shape[1]
    let rowBytes = weight.dtype.byteCount(elements: K)
    // Our own kernel (every SIMD path has one) reads f16 rows directly and other dtypes from 32-row f32 panels
    // that stay in L2 while every token passes (OpenBLAS repacked each converted tile per call: 57 vs 100 GFLOP/s
    // on an AVX-512 core at 64 tokens, 28 vs 88 at 16), and, unlike OpenBLAS, gives each token the same bits
    // whatever the other tokens of the call.
    // Rows per chunk: for converted dtypes about 512 KB of f32 (it must stay in a core's 1 MB L2 beside the
    // tokens), 4 to 32 rows.
    let panel = weight.dtype == .f16 ? 32 : max(4, min(32, ((512 << 10) / (K * 4)) & ~3))
    if weight.dtype == .f16 || weight.dtype == .f32 {
        // Read in place: the kernels convert f16 in registers.
        pool.parallelForDynamic(N, chunk: panel) { r, _ in
            if weight.dtype == .f16 {
                ck_gemm_f16(weight.data.assumingMemoryBound(to: UInt16.self), inp, K, out, N, T, K, r.lowerBound, r.upperBound)
            } else {
                ck_gemm_f32(weight.data.assumingMemoryBound(to: Float.self), K, inp, K, out, N, T, K, r.lowerBound, r.upperBound)
            }
        }
        return
    }
    let threads = pool.activeThreadCount
    // Weights repacked for the integer GEMM (their file pages given back) are read from their panels, whole
    // panels at a time, through the ggml rows they hold (K-quant panels cannot give them back: their rows are
    // read from the file again).
    let panels = weight.int8Panels.flatMap { p in int8GemmKind(weight).flatMap { $0 >= 3 ? nil : (p, $0) } }
    let packedRows = panels == nil ? 0 : N / 16 * 16
    let chunk = panels == nil ? panel : max(16, panel / 16 * 16)
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: threads * chunk * K)
    let rowScratch = UnsafeMutableRawPointer.allocate(byteCount: panels == nil ? 1 : threads * chunk * rowBytes, alignment: 64)
    defer { scratch.deallocate(); rowScratch.deallocate() }
    pool.parallelForDynamic(N, chunk: chunk) { r, thread in
        let mine = scratch + thread * chunk * K
        let fromPanels = min(r.upperBound, packedRows) - r.lowerBound
        if let (p, kind) = panels, fromPanels > 0 {
            let rows = rowScratch + thread * chunk * rowBytes
            ck_q8act_unpack(kind, p.base, K, r.lowerBound, r.lowerBound + fromPanels, rows)
            convertToFloat(dtype: weight.dtype, src: rows, dst: mine, count: fromPanels * K)
        }
        let done = max(0, fromPanels)
        if done < r.count {
            convertToFloat(dtype: weight.dtype, src: weight.data + (r.lowerBound + done) * rowBytes, dst: mine + done * K,
                           count: (r.count - done) * K)
        }
        ck_gemm_f32(mine, K, inp, K, out + r.lowerBound, N, T, K, 0, r.count)
    }
}
