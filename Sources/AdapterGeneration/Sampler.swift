import Foundation

/// A small, seedable random generator (xoshiro256**), so runs with the same `--seed` repeat exactly.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    /// Seeds the state through SplitMix64, as the xoshiro authors recommend.
    public init(seed: UInt64) {
        var z = seed
        func next() -> UInt64 {
            z &+= 0x9E37_79B9_7F4A_7C15
            var x = z
            x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
            x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
            return x ^ (x >> 31)
        }
        s = (next(), next(), next(), next())
    }

    /// Next 64 random bits.
    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0; s.3 ^= s.1; s.1 ^= s.2; s.0 ^= s.3
        s.2 ^= t
        s.3 = (s.3 << 45) | (s.3 >> 19)
        return result
    }

    /// Uniform double in [0, 1).
    public mutating func nextUnit() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }
}

/// Sampling settings. Defaults are the official LLaMA-Adapter ones (temperature 0.1, top-p 0.75).
public struct SamplingParameters: Sendable, Equatable {
    /// 0 selects greedy decoding (argmax).
    public var temperature: Float = 0.1
    /// Nucleus mass, as the official `sample_top_p`; 1 disables it.
    public var topP: Float = 0.75
    /// Keep only the k most likely tokens before top-p; 0 disables it.
    public var topK: Int = 0
    /// Seed of the random generator.
    public var seed: UInt64 = 0

    /// Creates sampling parameters.
    public init(temperature: Float = 0.1, topP: Float = 0.75, topK: Int = 0, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.seed = seed
    }
}

/// Picks the next token from logits: greedy, or temperature + top-k + the official top-p rule.
public struct Sampler: Sendable {
    /// Settings in use.
    public let parameters: SamplingParameters
    private var rng: SeededGenerator

    /// A sampler seeded from `parameters.seed`.
    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        rng = SeededGenerator(seed: parameters.seed)
    }

    /// Index of the largest logit; the first one on ties, as `torch.argmax`.
    public static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int {
        var best = 0
        var bestValue = -Float.infinity
        for (i, v) in logits.enumerated() where v > bestValue { best = i; bestValue = v }
        return best
    }

    /// Index of the largest logit of an array.
    public static func argmax(_ logits: [Float]) -> Int { logits.withUnsafeBufferPointer { argmax($0) } }

    /// Samples one token id from an array of logits.
    public mutating func sample(_ logits: [Float]) -> Int { logits.withUnsafeBufferPointer { sample($0) } }

    /// Samples one token id.
    public mutating func sample(_ logits: UnsafeBufferPointer<Float>) -> Int {
        let p = parameters
        if p.temperature <= 0 { return Sampler.argmax(logits) }
        // probs = softmax(logits / T), computed in f64 for a stable cumulative sum.
        var maxLogit = -Float.infinity
        for v in logits where v > maxLogit { maxLogit = v }
        var probs = [Double](repeating: 0, count: logits.count)
        var total = 0.0
        for i in 0..<logits.count {
            let e = exp((Double(logits[i]) - Double(maxLogit)) / Double(p.temperature))
            probs[i] = e
            total += e
        }
        // Sorting the whole vocabulary per token is slow; tokens below 1e-12 of the total can hold at most
        // vocab * 1e-12 of the mass, so for top-p < 1 - 1e-6 the cut always falls before them.
        let floor = (p.topP < 0.999999 || p.topK > 0) ? total * 1e-12 : 0
        var order = (0..<logits.count).filter { probs[$0] > floor }
        if order.isEmpty { order = Array(0..<logits.count) }
        for i in probs.indices { probs[i] /= total }
        order.sort { probs[$0] != probs[$1] ? probs[$0] > probs[$1] : $0 < $1 }
        var keep = order.count
        if p.topK > 0 { keep = min(keep, p.topK) }
        if p.topP < 1 {
            // sample_top_p: drop tokens whose preceding cumulative mass already exceeds p.
            var cumulative = 0.0
            for (rank, id) in order.prefix(keep).enumerated() {
                if cumulative > Double(p.topP) { keep = rank; break }
                cumulative += probs[id]
            }
        }
        keep = max(keep, 1)
        let kept = order.prefix(keep)
        let mass = kept.reduce(0.0) { $0 + probs[$1] }
        var u = rng.nextUnit() * mass
        for id in kept {
            u -= probs[id]
            if u < 0 { return id }
        }
        return kept.last!
    }
}
