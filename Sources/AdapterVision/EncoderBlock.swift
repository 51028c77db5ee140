import AdapterCore

/// Activation of an encoder block's MLP.
public enum MLPActivation: Sendable {
    /// Exact GELU (timm `Block`, PyTorch `nn.GELU()`).
    case gelu
    /// CLIP's QuickGELU, x * sigmoid(1.702 x).
    case quickGelu
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
        try check(fc2Weight, [d, hidden], "fc2 weight")
        try check(fc1Bias, [hidden], "fc1 bias"); try check(fc2Bias, [d], "fc2 bias")
        guard heads > 0, d % heads == 0 else { throw AdapterError.shape("\(what): width \(d) is not divisible by \(heads) heads") }
    }
}

/// Runs one encoder block in place on x [T, dim].
public func encoderBlockForward(_ x: UnsafeMutablePointer<Float>, T: Int, block w: EncoderBlockWeights, pool: ThreadPool = .shared) {
    let d = w.dim, h = w.hidden, hd = d / w.heads, heads = w.heads
    let xb = UnsafeMutablePointer<Float>.allocate(capacity: T * max(d, h))
    let qkv = UnsafeMutablePointer<Float>.allocate(capacity: T * 3 * d)
    let att = UnsafeMutablePointer<Float>.allocate(capacity: T * d)
    let hid = UnsafeMutablePointer<Float>.allocate(capacity: T * h)
    defer { [xb, qkv, att, hid].forEach { $0.deallocate() } }

    layerNormForward(out: xb, inp: x, weight: w.ln1Weight.floats, bias: w.ln1Bias.floats, T: T, C: d, eps: w.eps)
    linearForward(out: qkv, inp: xb, weight: w.qkvWeight, bias: w.qkvBias?.floats, T: T, pool: pool)
    attentionForward(out: att, outStride: d, q: qkv, qStride: 3 * d, keys: qkv + d, values: qkv + 2 * d, kvStride: 3 * d,
                     T: T, keyCount: T, mask: .none, nHeads: heads, nKVHeads: heads, headDim: hd, pool: pool)
    linearForward(out: xb, inp: att, weight: w.projWeight, bias: w.projBias?.floats, T: T, pool: pool)
    addInPlace(x, xb, T * d)
    layerNormForward(out: xb, inp: x, weight: w.ln2Weight.floats, bias: w.ln2Bias.floats, T: T, C: d, eps: w.eps)
    linearForward(out: hid, inp: xb, weight: w.fc1Weight, bias: w.fc1Bias?.floats, T: T, pool: pool)
    switch w.activation {
    case .gelu: geluInPlace(hid, T * h)
    case .quickGelu: quickGeluInPlace(hid, T * h)
    }
    linearForward(out: xb, inp: hid, weight: w.fc2Weight, bias: w.fc2Bias?.floats, T: T, pool: pool)
    addInPlace(x, xb, T * d)
}
