import Foundation

// Attention, forward and backward side by side. One forward serves every caller: LLaMA decoding and
// prefill over a KV cache, the training forward (which records the probabilities its backward needs),
// and the ViT encoders (no mask). LLaMA-Adapter's gated attention over the adaption prompt rides in the
// same call, because decoding a small model is bound by thread hand-offs as much as by arithmetic.

// MARK: - Gates

/// Official llama.py: a one-token adaption prompt takes `gate.tanh() * adapter_v` and never sees
/// `new_gate`; longer prompts multiply their scores by `new_gate` too. The one place this rule lives.
@inlinable
public func adaptionPromptUsesNewGate(promptLength: Int) -> Bool { promptLength > 1 }

/// The effective per-head gate of the adaption prompt's attention: tanh(gate_h) × new_gate (new_gate
/// only when the prompt has more than one token, see `adaptionPromptUsesNewGate`).
@inlinable
public func adaptionGate(_ gate: Float, newGate: Float?, promptLength: Int) -> Float {
    tanhf(gate) * (adaptionPromptUsesNewGate(promptLength: promptLength) ? (newGate ?? 1) : 1)
}

// MARK: - Forward

/// Which keys a query may see.
public enum AttentionMask: Sendable, Equatable {
    /// Every key (ViT encoders, the adaption prompt).
    case none
    /// Query t sits at position startPos + t and sees keys 0...startPos + t (decoder with a KV cache).
    case causal(startPos: Int)
}

/// The adaption prompt of one layer, as its attention needs it: keys and values through wk/wv
/// ([length, nKVHeads·headDim], no RoPE) and the effective gate per query head (`adaptionGate`).
public struct GatedPrompt {
    /// Prompt keys [length, kvStride].
    public let keys: UnsafePointer<Float>
    /// Prompt values [length, kvStride].
    public let values: UnsafePointer<Float>
    /// Number of prompt tokens.
    public let length: Int
    /// Effective gate per query head [nHeads].
    public let gates: UnsafePointer<Float>

    /// Wraps prompt buffers.
    public init(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, length: Int, gates: UnsafePointer<Float>) {
        self.keys = keys
        self.values = values
        self.length = length
        self.gates = gates
    }
}

/// Where a recording forward saves what the attention backward needs.
public struct AttentionRecord {
    /// Probabilities [nHeads, T, keyCount], zero where masked.
    public let probs: UnsafeMutablePointer<Float>
    /// Prompt probabilities [nHeads, T, promptLength] (its own softmax), when there is a prompt.
    public let promptProbs: UnsafeMutablePointer<Float>?

    /// Wraps record buffers.
    public init(probs: UnsafeMutablePointer<Float>, promptProbs: UnsafeMutablePointer<Float>?) {
        self.probs = probs
        self.promptProbs = promptProbs
    }
}

/// Scaled dot-product attention of T queries over `keyCount` keys, grouped-query (query head h reads
/// kv head h / (nHeads / nKVHeads)), plus the gated adaption-prompt attention when `prompt` is given:
/// out[t, h] = Σ_j P_h[t, j]·v[j] + g_h·Σ_l Pp_h[t, l]·vp[l], each softmax over its own keys with scale
/// 1/√headDim (official llama.py). Rows are `qStride`, `kvStride` and `outStride` floats apart, so q, k
/// and v can sit inside one packed qkv buffer.
///
/// `normalize: false` skips the main softmax (the official plain forward's one-token bug, `--compat
/// official`). With `record`, the probabilities are saved; the arithmetic is the same either way, so a
/// training forward computes exactly what inference does.
/// Work: T ≥ 16 runs as two GEMMs (S = QKᵀ, O = SV) per head and block of 32 queries, over the keys the block
/// sees; shorter chunks (decoding) run per (position, head) pair with fused SIMD dot products. The prompt part
/// always runs per pair (it is at most a few dozen keys). `scratch` gives each thread `scratchStride` floats
/// (≥ keyCount + promptLength + headDim) for the per-pair path; without it the call allocates.
public func attentionForward(out: UnsafeMutablePointer<Float>, outStride: Int,
                             q: UnsafePointer<Float>, qStride: Int,
                             keys: UnsafePointer<Float>, values: UnsafePointer<Float>, kvStride: Int,
                             T: Int, keyCount: Int, mask: AttentionMask,
                             nHeads: Int, nKVHeads: Int, headDim hd: Int,
                             normalize: Bool = true, prompt: GatedPrompt? = nil, record: AttentionRecord? = nil,
                             scratch: UnsafeMutablePointer<Float>? = nil, scratchStride: Int = 0,
                             pool: ThreadPool = .shared) {
    precondition(nHeads % nKVHeads == 0, "query heads must be a multiple of kv heads")
    let group = nHeads / nKVHeads
    let scale = 1 / Float(hd).squareRoot()
    let L = prompt?.length ?? 0
    func visible(_ t: Int) -> Int {
        switch mask {
        case .none: return keyCount
        case .causal(let startPos): return startPos + t + 1
        }
    }
    let gemm = T >= 16
    if gemm {
        // Query rows in blocks of 32 per head, each block against the keys its last row sees: under a causal mask
        // that skips most of the masked triangle (a 512-token prefill computes 53% of the square), and the
        // (head, block) jobs keep both threads busy where whole heads split 5/4.
        let block = 32, blocks = (T + block - 1) / block
        let own = record == nil ? UnsafeMutablePointer<Float>.allocate(capacity: pool.threadCount * block * keyCount) : nil
        defer { own?.deallocate() }
        pool.parallelForDynamic(nHeads * blocks, chunk: 1) { jobs, thread in
            for job in jobs {
                let h = job / blocks, t0 = job % blocks * block, t1 = min(T, t0 + block)
                let sm = record.map { $0.probs + (h * T + t0) * keyCount } ?? own! + thread * block * keyCount
                let kvh = h / group, seen = visible(t1 - 1)
                BLAS.gemmABt(m: t1 - t0, n: seen, k: hd, a: q + t0 * qStride + h * hd, lda: qStride, b: keys + kvh * hd,
                             ldb: kvStride, c: sm, ldc: keyCount, alpha: scale)
                for t in t0..<t1 {
                    let row = sm + (t - t0) * keyCount, n = visible(t)
                    if normalize { softmaxInPlace(row, n) }
                    (row + n).update(repeating: 0, count: keyCount - n)
                }
                BLAS.gemmAB(m: t1 - t0, n: hd, k: seen, a: sm, lda: keyCount, b: values + kvh * hd, ldb: kvStride,
                            c: out + t0 * outStride + h * hd, ldc: outStride)
            }
        }
        if prompt == nil { return }
    }
    // The caller's scratch serves when its rows are wide enough; otherwise rows are allocated for this call.
    let need = keyCount + L + hd
    let given = scratchStride >= need ? scratch : nil
    let stride = given != nil ? scratchStride : need
    let own = given == nil ? UnsafeMutablePointer<Float>.allocate(capacity: pool.threadCount * stride) : nil
    defer { own?.deallocate() }
    let rows = given ?? own!
    pool.run { ti, tn in
        let scores = rows + ti * stride
        let total = T * nHeads
        for job in (total * ti / tn)..<(total * (ti + 1) / tn) {
            let t = job / nHeads, h = job % nHeads
            let kvh = h / group
            let qh = q + t * qStride + h * hd
            let o = out + t * outStride + h * hd
            if !gemm {
                let n = visible(t)
                let row = record.map { $0.probs + (h * T + t) * keyCount } ?? scores
                if normalize {
                    attendHead(q: qh, keys: keys + kvh * hd, values: values + kvh * hd, count: n, headDim: hd,
                               stride: kvStride, scale: scale, scores: row, out: o)
                } else {
                    o.initialize(repeating: 0, count: hd)
                    for j in 0..<n {
                        row[j] = dot(qh, keys + j * kvStride + kvh * hd, hd) * scale
                        axpy(row[j], values + j * kvStride + kvh * hd, o, hd)
                    }
                }
                if record != nil { (row + n).update(repeating: 0, count: keyCount - n) }
            }
            if let prompt {
                let g = prompt.gates[h]
                let pRow = record?.promptProbs.map { $0 + (h * T + t) * L } ?? scores + keyCount
                if L == 1 {
                    // softmax over one key is 1: skip the dot product.
                    pRow[0] = 1
                    axpy(g, prompt.values + kvh * hd, o, hd)
                } else {
                    let head = scores + keyCount + L
                    attendHead(q: qh, keys: prompt.keys + kvh * hd, values: prompt.values + kvh * hd, count: L, headDim: hd,
                               stride: kvStride, scale: scale, scores: pRow, out: head)
                    axpy(g, head, o, hd)
                }
            }
        }
    }
}

// MARK: - Backward

/// Softmax backward of one probability row p over n entries, with dp the gradient of p:
/// ds = p ⊙ (dp − Σ p·dp), times `alpha`, written over `dp`.
@inline(__always)
private func softmaxRowBackward(_ p: UnsafePointer<Float>, _ dp: UnsafeMutablePointer<Float>, _ n: Int, alpha: Float) {
    var s: Float = 0
    for j in 0..<n { s += p[j] * dp[j] }
    for j in 0..<n { dp[j] = alpha * p[j] * (dp[j] - s) }
}

/// Backward of `attentionForward` over one sequence whose keys are its own positions (keyCount = T: the
/// training case, causal for LLaMA, `.none` for the ViT blocks): from dOut [T, nHeads·headDim] accumulates dq,
/// dk and dv (gradients w.r.t. the rotated q and k: apply `ropeBackward` afterwards). Rows of q/dq are
/// `qStride` floats apart and rows of k, v, dk, dv `kvStride` (so a packed qkv buffer works as in the forward).
/// Per head: dP = dOut·vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP)), dq += scale·dS·k, dk += scale·dSᵀ·q, dv += Pᵀ·dOut.
/// Causal: rows go in blocks of 64 and each block multiplies only the keys it can see, so the work is about
/// half of the full T×T products. Threads split kv heads, so query heads sharing a kv head add into its
/// dk/dv on one thread. Saved from the forward: q, k, v and the record's `probs` [nHeads, T, T].
public func attentionBackward(dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
                              dOut: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                              v: UnsafePointer<Float>, probs: UnsafePointer<Float>, qStride: Int? = nil, kvStride: Int? = nil,
                              causal: Bool = true, T: Int, nHeads: Int, nKVHeads: Int, headDim hd: Int, pool: ThreadPool = .shared) {
    precondition(nHeads % nKVHeads == 0, "query heads must be a multiple of kv heads")
    let dim = nHeads * hd, group = nHeads / nKVHeads
    let qs = qStride ?? dim, ks = kvStride ?? nKVHeads * hd
    let scale = 1 / Float(hd).squareRoot()
    let block = causal ? 64 : T
    pool.parallelFor(nKVHeads) { r in
        let dS = UnsafeMutablePointer<Float>.allocate(capacity: block * T)
        defer { dS.deallocate() }
        for kvh in r {
            for h in (kvh * group)..<((kvh + 1) * group) {
                let p = probs + h * T * T
                var r0 = 0
                while r0 < T {
                    let rows = min(block, T - r0)
                    let cols = causal ? r0 + rows : T
                    let dO = dOut + r0 * dim + h * hd
                    BLAS.gemmAtB(m: cols, n: hd, k: rows, a: p + r0 * T, lda: T, b: dO, ldb: dim, c: dv + kvh * hd, ldc: ks, beta: 1)
                    BLAS.gemmABt(m: rows, n: cols, k: hd, a: dO, lda: dim, b: v + kvh * hd, ldb: ks, c: dS, ldc: cols)
                    for i in 0..<rows {
                        let n = causal ? r0 + i + 1 : T
                        softmaxRowBackward(p + (r0 + i) * T, dS + i * cols, n, alpha: 1)
                        (dS + i * cols + n).update(repeating: 0, count: cols - n)
                    }
                    BLAS.gemmAB(m: rows, n: hd, k: cols, a: dS, lda: cols, b: k + kvh * hd, ldb: ks, c: dq + r0 * qs + h * hd, ldc: qs,
                                alpha: scale, beta: 1)
                    BLAS.gemmAtB(m: cols, n: hd, k: rows, a: dS, lda: cols, b: q + r0 * qs + h * hd, ldb: qs, c: dk + kvh * hd, ldc: ks,
                                 alpha: scale, beta: 1)
                    r0 += rows
                }
            }
        }
    }
}

/// Backward of the gated adaption-prompt part of `attentionForward` (raw per-head `gate` [nHeads] and
/// optional `newGate`, effective gate g_h = `adaptionGate`). With dPraw = dOut_h·Vpᵀ and S_h = Σ P_h ⊙ dPraw
/// (the gradient of g_h), accumulates: dGate_h += (1 − tanh²(gate_h))·newGate·S_h, dNewGate += Σ_h
/// tanh(gate_h)·S_h (only when the prompt uses new_gate), dVp += g_h·P_hᵀ·dOut_h, and with
/// dS = g_h·P ⊙ (dPraw − rowsum(P ⊙ dPraw)): dq += scale·dS·Kp, dKp += scale·dSᵀ·q. With zero gates
/// (initialisation) only the gate gradients are non-zero, which is what lets training start from the
/// frozen model's behaviour. Saved from the forward: q, Kp, Vp and the record's `promptProbs`.
/// Any gradient buffer may be nil.
public func adaptionPromptAttentionBackward(dq: UnsafeMutablePointer<Float>?, dPromptKeys: UnsafeMutablePointer<Float>?,
                                            dPromptValues: UnsafeMutablePointer<Float>?, dGate: UnsafeMutablePointer<Float>?,
                                            dNewGate: UnsafeMutablePointer<Float>?, dOut: UnsafePointer<Float>,
                                            q: UnsafePointer<Float>, promptKeys: UnsafePointer<Float>,
                                            promptValues: UnsafePointer<Float>, probs: UnsafePointer<Float>,
                                            gate: UnsafePointer<Float>, newGate: Float? = nil,
                                            T: Int, L: Int, nHeads: Int, nKVHeads: Int, headDim hd: Int,
                                            pool: ThreadPool = .shared) {
    precondition(nHeads % nKVHeads == 0, "query heads must be a multiple of kv heads")
    let dim = nHeads * hd, kvDim = nKVHeads * hd, group = nHeads / nKVHeads
    let scale = 1 / Float(hd).squareRoot()
    let usesNewGate = adaptionPromptUsesNewGate(promptLength: L)
    let ng = usesNewGate ? (newGate ?? 1) : 1
    var gateGrad = [Float](repeating: 0, count: nHeads)
    gateGrad.withUnsafeMutableBufferPointer { sBuf in
        let sums = sBuf.baseAddress!
        pool.parallelFor(nKVHeads) { r in
            let dS = UnsafeMutablePointer<Float>.allocate(capacity: T * L)
            defer { dS.deallocate() }
            for kvh in r {
                for h in (kvh * group)..<((kvh + 1) * group) {
                    let p = probs + h * T * L
                    let g = adaptionGate(gate[h], newGate: newGate, promptLength: L)
                    BLAS.gemmABt(m: T, n: L, k: hd, a: dOut + h * hd, lda: dim, b: promptValues + kvh * hd, ldb: kvDim,
                                 c: dS, ldc: L)
                    var s: Float = 0
                    for i in 0..<(T * L) { s += p[i] * dS[i] }
                    sums[h] = s
                    if g == 0 { continue }
                    if let dPromptValues {
                        BLAS.gemmAtB(m: L, n: hd, k: T, a: p, lda: L, b: dOut + h * hd, ldb: dim, c: dPromptValues + kvh * hd,
                                     ldc: kvDim, alpha: g, beta: 1)
                    }
                    for t in 0..<T { softmaxRowBackward(p + t * L, dS + t * L, L, alpha: g) }
                    if let dq {
                        BLAS.gemmAB(m: T, n: hd, k: L, a: dS, lda: L, b: promptKeys + kvh * hd, ldb: kvDim, c: dq + h * hd,
                                    ldc: dim, alpha: scale, beta: 1)
                    }
                    if let dPromptKeys {
                        BLAS.gemmAtB(m: L, n: hd, k: T, a: dS, lda: L, b: q + h * hd, ldb: dim, c: dPromptKeys + kvh * hd,
                                     ldc: kvDim, alpha: scale, beta: 1)
                    }
                }
            }
        }
    }
    for h in 0..<nHeads {
        let th = tanhf(gate[h])
        dGate?[h] += (1 - th * th) * ng * gateGrad[h]
        if usesNewGate { dNewGate?.pointee += th * gateGrad[h] }
    }
}
