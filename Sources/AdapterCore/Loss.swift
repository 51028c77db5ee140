import Foundation

// The training loss, forward and backward in one pass (nothing else needs the softmax it computes).
// Backward kernels follow llm.c: free functions over plain f32 buffers, shapes in the signature; every
// gradient is ACCUMULATED (`+=`) so residual branches compose, the trainer zeroes gradients once per step,
// and frozen weights get no gradient buffer (nil) while gradients still flow through them. Each backward
// sits beside the forward it inverts (Linear.swift, Ops.swift, Attention.swift) and is checked against
// central finite differences in BackwardTests.

/// Cross-entropy of logits [T, V] against `targets` (T labels, already shifted so row t predicts targets[t]),
/// skipping rows whose target is `ignoreIndex` (the official loss ignores token id 0). Returns the mean loss
/// over the counted rows and, if `dLogits` is given, WRITES (not accumulates: it is where backward starts)
/// dLogits = (softmax − onehot)/count on counted rows and 0 on ignored rows. `dLogits` may be the same
/// buffer as `logits` (each row is read in full before it is written), which saves a [T, V] buffer.
/// With no counted row the loss is 0 and the gradient 0, as the official `output.mean() * 0`.
/// `denominator` replaces the row count in the gradient (a batch's loss is the mean over all its labelled
/// rows, so each sequence divides by the batch's count, times the accumulation steps).
public func crossEntropyForwardBackward(logits: UnsafePointer<Float>, targets: [Int], V: Int, ignoreIndex: Int = 0,
                                        dLogits: UnsafeMutablePointer<Float>?, denominator: Float? = nil) -> Float {
    let T = targets.count
    let count = targets.reduce(0) { $0 + ($1 == ignoreIndex ? 0 : 1) }
    var total: Double = 0
    let invCount = denominator.map { 1 / $0 } ?? (count > 0 ? 1 / Float(count) : 0)
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
