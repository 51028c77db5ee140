// AdamW and the learning-rate schedule of the official training (util/lr_sched.py, torch.optim.AdamW with
// betas (0.9, 0.95) and the timm weight-decay groups of util/misc.py add_weight_decay).
import Foundation

/// Learning rate per optimizer step: linear warm-up from 0, then half-cycle cosine down to `minLR` at `steps`
/// (official `adjust_learning_rate`, with steps where the official code counts fractional epochs).
public struct LRSchedule: Sendable, Equatable {
    /// Peak learning rate.
    public var lr: Double
    /// Floor of the cosine.
    public var minLR: Double
    /// Warm-up steps.
    public var warmupSteps: Int
    /// Total optimizer steps.
    public var steps: Int

    /// A schedule.
    public init(lr: Double, minLR: Double, warmupSteps: Int, steps: Int) {
        self.lr = lr
        self.minLR = minLR
        self.warmupSteps = warmupSteps
        self.steps = steps
    }

    /// The rate at step `k` (0-based).
    public func rate(at k: Int) -> Double {
        if k < warmupSteps { return lr * Double(k) / Double(warmupSteps) }
        let span = Double(max(steps - warmupSteps, 1))
        return minLR + (lr - minLR) * 0.5 * (1 + cos(Double.pi * Double(k - warmupSteps) / span))
    }
}

/// AdamW hyper-parameters (PyTorch's defaults where the official code keeps them).
public struct AdamWConfig: Sendable, Equatable {
    /// β1, β2.
    public var beta1: Float = 0.9, beta2: Float = 0.95
    /// ε.
    public var eps: Float = 1e-8
    /// Decoupled weight decay for parameters that decay (not biases, not 1-D tensors).
    public var weightDecay: Float = 0.05

    /// Official values.
    public init() {}
}

/// Per-parameter AdamW state: first and second moments and the step count (PyTorch keeps the step per
/// parameter, and a parameter without a gradient does not advance it).
public final class AdamState: @unchecked Sendable {
    /// Moments.
    public let expAvg, expAvgSq: UnsafeMutablePointer<Float>
    /// Number of updates this parameter has had.
    public var step = 0
    /// Elements.
    public let count: Int

    /// Zero moments for `count` values.
    public init(count: Int) {
        self.count = count
        expAvg = .allocate(capacity: max(count, 1)); expAvg.initialize(repeating: 0, count: max(count, 1))
        expAvgSq = .allocate(capacity: max(count, 1)); expAvgSq.initialize(repeating: 0, count: max(count, 1))
    }

    deinit { expAvg.deallocate(); expAvgSq.deallocate() }
}

/// torch 1.13 `_single_tensor_adamw` for one parameter, with the operations in its order and precision:
/// p ← p·(1 − lr·wd); m ← β1·m + (1 − β1)·g; v ← β2·v + (1 − β2)·g²; p ← p − (lr / (1 − β1ᵗ))·m / (√v / √(1 − β2ᵗ) + ε).
public func adamWStep(values p: UnsafeMutablePointer<Float>, grad g: UnsafePointer<Float>, state s: AdamState,
                      lr: Double, weightDecay: Float, config c: AdamWConfig) {
    s.step += 1
    let n = s.count
    let decay = Float(1 - lr * Double(weightDecay))
    if weightDecay != 0 { for i in 0..<n { p[i] *= decay } }
    let bc1 = 1 - pow(Double(c.beta1), Double(s.step))
    let bc2 = 1 - pow(Double(c.beta2), Double(s.step))
    let stepSize = Float(lr / bc1)
    let bc2Sqrt = Float(bc2.squareRoot())
    let m = s.expAvg, v = s.expAvgSq
    let oneMinusB1 = 1 - c.beta1, oneMinusB2 = 1 - c.beta2
    for i in 0..<n {
        // exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        m[i] = m[i] * c.beta1 + oneMinusB1 * g[i]
        v[i] = v[i] * c.beta2 + oneMinusB2 * g[i] * g[i]
        let denom = v[i].squareRoot() / bc2Sqrt + c.eps
        p[i] = p[i] - stepSize * (m[i] / denom)
    }
}
