import AdapterCore

/// Activation of an encoder block's MLP.
public enum MLPActivation: Sendable {
    /// Exact GELU (timm `Block`, PyTorch `nn.GELU()`).
    case gelu
    /// CLIP's QuickGELU, x * sigmoid(1.702 x).
    case quickGelu
    /// The tanh approximation of GELU (`gelu_pytorch_tanh`, SigLIP).
    case geluTanh
}

/// A pre-norm transformer encoder block without masking or RoPE: the ViT block of CLIP
/// (`ResidualAttentionBlock`) and of timm (`Block`, used for the adapter's visual blocks).
/// x = x + proj(MHA(ln1(x))); x = x + fc2(act(fc1(ln2(x)))).
public struct EncoderBlockWeights: @unchecked Sendable {
    /// LayerNorm before attention (weight, bias), f32.
    public var ln1Weight: Tensor, ln1Bias: Tensor
    /// Packed q, k, v projection [3*dim, dim] and its bias [3*dim] (f32).
    public var qkvWeight: Tensor, qkvBias: Tensor?
    /// Output projection [dim, dim] and bias.
    public var projWeight: Tensor, projBias: Tensor?
    /// LayerNorm before the MLP.
    public var ln2Weight: Tensor, ln2Bias: Tensor
    /// MLP: fc1 [hidden, dim], fc2 [dim, hidden], with biases.
    public var fc1Weight: Tensor, fc1Bias: Tensor?, fc2Weight: Tensor, fc2Bias: Tensor?
    /// Number of attention heads.
    public var heads: Int
    /// MLP activation.
    public var activation: MLPActivation
    /// LayerNorm epsilon (1e-5 for both CLIP and timm).
    public var eps: Float = 1e-5
    /// DINOv2's LayerScale: per-channel factors [dim] on the attention and MLP branches before each residual
    /// add (nil: none, as in CLIP and timm blocks). Inference only: the recording forward refuses them.
    public var layerScale1: Tensor?, layerScale2: Tensor?

    /// Creates a block from its tensors (f32 norms and biases; matrices in any dtype).
    public init(ln1Weight: Tensor, ln1Bias: Tensor, qkvWeight: Tensor, qkvBias: Tensor?, projWeight: Tensor, projBias: Tensor?,
                ln2Weight: Tensor, ln2Bias: Tensor, fc1Weight: Tensor, fc1Bias: Tensor?, fc2Weight: Tensor, fc2Bias: Tensor?,
                heads: Int, activation: MLPActivation, eps: Float = 1e-5) {
        self.ln1Weight = ln1Weight; self.ln1Bias = ln1Bias
        self.qkvWeight = qkvWeight; self.qkvBias = qkvBias
        self.projWeight = projWeight; self.projBias = projBias
        self.ln2Weight = ln2Weight; self.ln2Bias = ln2Bias
        self.fc1Weight = fc1Weight; self.fc1Bias = fc1Bias
        self.fc2Weight = fc2Weight; self.fc2Bias = fc2Bias
        self.heads = heads; self.activation = activation; self.eps = eps
    }

    /// Model width.
    public var dim: Int { qkvWeight.shape[1] }
    /// MLP width.
    public var hidden: Int { fc1Weight.shape[0] }

    /// Checks shapes against each other; throws a readable error naming `what`.
    public func validate(_ what: String) throws {
        let d = dim
        func check(_ t: Tensor?, _ shape: [Int], _ name: String) throws {
            if let t, t.shape != shape { throw AdapterError.shape("\(what): \(name) has shape \(t.shape), expected \(shape)") }
        }
        try check(qkvWeight, [3 * d, d], "qkv weight")
        try check(qkvBias, [3 * d], "qkv bias")
        try check(projWeight, [d, d], "attention output weight")
        try check(projBias, [d], "attention output bias")
        try check(ln1Weight, [d], "norm1 weight"); try check(ln1Bias, [d], "norm1 bias")
        try check(ln2Weight, [d], "norm2 weight"); try check(ln2Bias, [d], "norm2 bias")
        guard d > 0, fc1Weight.shape.count == 2, fc1Weight.shape[0] > 0 else { throw AdapterError.shape("\(what): empty block") }
        try check(fc1Weight, [hidden, d], "fc1 weight")
        try check(fc2Weight, [d, hidden], "fc2 weight")
        try check(fc1Bias, [hidden], "fc1 bias"); try check(fc2Bias, [d], "fc2 bias")
        try check(layerScale1, [d], "layer_scale1"); try check(layerScale2, [d], "layer_scale2")
        guard heads > 0, d % heads == 0 else { throw AdapterError.shape("\(what): width \(d) is not divisible by \(heads) heads") }
    }
}

/// What one encoder block's backward needs, saved by a recording forward (T positions, f32).
public final class EncoderBlockRecord {
    /// Positions recorded.
    public let T: Int
    /// Block input [T, dim].
    public let inp: UnsafeMutablePointer<Float>
    /// norm1 output [T, dim] (input of qkv).
    public let ln1: UnsafeMutablePointer<Float>
    /// Packed q, k, v [T, 3·dim].
    public let qkv: UnsafeMutablePointer<Float>
    /// Attention probabilities [heads, T, T].
    public let probs: UnsafeMutablePointer<Float>
    /// Attention output before proj [T, dim].
    public let att: UnsafeMutablePointer<Float>
    /// Residual after attention [T, dim].
    public let mid: UnsafeMutablePointer<Float>
    /// norm2 output [T, dim] (input of fc1).
    public let ln2: UnsafeMutablePointer<Float>
    /// fc1 output before the activation [T, hidden].
    public let pre: UnsafeMutablePointer<Float>
    /// Activation output [T, hidden] (input of fc2).
    public let act: UnsafeMutablePointer<Float>
    private let all: [UnsafeMutablePointer<Float>]

    /// Buffers for a block of `block`'s shape over `T` positions.
    public init(block w: EncoderBlockWeights, T: Int) {
        let d = w.dim, h = w.hidden
        func buf(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
            p.initialize(repeating: 0, count: max(n, 1))
            return p
        }
        self.T = T
        inp = buf(T * d); ln1 = buf(T * d); qkv = buf(T * 3 * d); probs = buf(w.heads * T * T)
        att = buf(T * d); mid = buf(T * d); ln2 = buf(T * d); pre = buf(T * h); act = buf(T * h)
        all = [inp, ln1, qkv, probs, att, mid, ln2, pre, act]
    }

    deinit { all.forEach { $0.deallocate() } }
}

/// Runs one encoder block in place on x [T, dim]. With `record` (training) it also saves what the backward
/// needs; the arithmetic is the same either way.
public func encoderBlockForward(_ x: UnsafeMutablePointer<Float>, T: Int, block w: EncoderBlockWeights,
                                record rec: EncoderBlockRecord? = nil, pool: ThreadPool = .shared) {
    let d = w.dim, h = w.hidden, hd = d / w.heads, heads = w.heads
    precondition(rec == nil || rec!.T == T, "encoder record for another length")
    precondition(rec == nil || (w.layerScale1 == nil && w.layerScale2 == nil), "LayerScale blocks have no backward")
    let xb = UnsafeMutablePointer<Float>.allocate(capacity: T * max(d, h))
    let own = rec == nil ? UnsafeMutablePointer<Float>.allocate(capacity: T * (3 * d + d + h)) : nil
    defer { xb.deallocate(); own?.deallocate() }
    let qkv = rec?.qkv ?? own!, att = rec?.att ?? own! + T * 3 * d
    let pre = rec?.pre ?? own! + T * 4 * d, hid = rec?.act ?? pre
    if let rec { rec.inp.update(from: x, count: T * d) }
    let n1 = rec?.ln1 ?? xb
    layerNormForward(out: n1, inp: x, weight: w.ln1Weight.floats, bias: w.ln1Bias.floats, T: T, C: d, eps: w.eps)
    linearForward(out: qkv, inp: n1, weight: w.qkvWeight, bias: w.qkvBias?.floats, T: T, pool: pool)
    attentionForward(out: att, outStride: d, q: qkv, qStride: 3 * d, keys: qkv + d, values: qkv + 2 * d, kvStride: 3 * d,
                     T: T, keyCount: T, mask: .none, nHeads: heads, nKVHeads: heads, headDim: hd,
                     record: rec.map { AttentionRecord(probs: $0.probs, promptProbs: nil) }, pool: pool)
    linearForward(out: xb, inp: att, weight: w.projWeight, bias: w.projBias?.floats, T: T, pool: pool)
    if let s = w.layerScale1 { scaleColumns(xb, s.floats, T: T, C: d) }
    addInPlace(x, xb, T * d)
    if let rec { rec.mid.update(from: x, count: T * d) }
    let n2 = rec?.ln2 ?? xb
    layerNormForward(out: n2, inp: x, weight: w.ln2Weight.floats, bias: w.ln2Bias.floats, T: T, C: d, eps: w.eps)
    linearForward(out: pre, inp: n2, weight: w.fc1Weight, bias: w.fc1Bias?.floats, T: T, pool: pool)
    if pre != hid { hid.update(from: pre, count: T * h) }
    switch w.activation {
    case .gelu: geluInPlace(hid, T * h)
    case .quickGelu: quickGeluInPlace(hid, T * h)
    case .geluTanh: geluTanhInPlace(hid, T * h)
    }
    linearForward(out: xb, inp: hid, weight: w.fc2Weight, bias: w.fc2Bias?.floats, T: T, pool: pool)
    if let s = w.layerScale2 { scaleColumns(xb, s.floats, T: T, C: d) }
    addInPlace(x, xb, T * d)
}

/// x[t, c] *= s[c] for T rows of C columns (LayerScale).
func scaleColumns(_ x: UnsafeMutablePointer<Float>, _ s: UnsafePointer<Float>, T: Int, C: Int) {
    for t in 0..<T {
        let row = x + t * C
        for c in 0..<C { row[c] *= s[c] }
    }
}
