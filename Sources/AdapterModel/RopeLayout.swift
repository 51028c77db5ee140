import AdapterCore

/// Hugging Face checkpoints store wq/wk permuted for `rotate_half` RoPE; the model applies RoPE on
/// adjacent pairs (Meta layout), so their rows are put back: within each head, HF row i < hd/2 is Meta
/// row 2i and HF row hd/2 + i is Meta row 2i + 1 (the inverse of transformers' conversion `permute`).
public func metaLayoutFromRotateHalf(_ w: Tensor, heads: Int) throws -> Tensor {
    guard w.shape.count == 2, heads > 0, w.shape[0] % heads == 0, (w.shape[0] / heads) % 2 == 0 else {
        throw AdapterError.shape("cannot undo the rotate-half permutation of a tensor of shape \(w.shape) with \(heads) heads")
    }
    let rows = w.shape[0], headDim = rows / heads, half = headDim / 2
    let rowBytes = w.dtype.byteCount(elements: w.shape[1])
    let out = Tensor(uninitialized: w.shape, dtype: w.dtype)
    for h in 0..<heads {
        for i in 0..<half {
            let base = h * headDim
            (out.mutableData + (base + 2 * i) * rowBytes).copyMemory(from: w.data + (base + i) * rowBytes, byteCount: rowBytes)
            (out.mutableData + (base + 2 * i + 1) * rowBytes).copyMemory(from: w.data + (base + half + i) * rowBytes, byteCount: rowBytes)
        }
    }
    return out
}
