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

/// Sampling settings. The memberwise defaults are the official LLaMA-Adapter ones (temperature 0.1,
/// top-p 0.75, temperature applied before top-p as `sample_top_p` does); `llamaCpp` holds the conventions
/// users know from llama.cpp for models that ship no defaults of their own.
public struct SamplingParameters: Sendable, Equatable {
    /// 0 selects greedy decoding (argmax).
    public var temperature: Float
    /// Nucleus mass, as the official `sample_top_p`; 1 disables it.
    public var topP: Float
    /// Keep only the k most likely tokens; 0 disables it.
    public var topK: Int
    /// Keep only tokens with probability ≥ minP × the most likely token's (llama.cpp `--min-p`); 0 disables it.
    public var minP: Float
    /// llama.cpp's repeat penalty: a logit of a token among the last `repeatLastN` is divided by it when
    /// positive and multiplied by it when negative; 1 disables it.
    public var repeatPenalty: Float
    /// How many recent tokens (prompt included) the repeat penalty looks at; 0 disables it, -1 means all.
    public var repeatLastN: Int
    /// True: temperature first, then the filters (the official code). False: filters on the untempered
    /// distribution, temperature last (llama.cpp's sampler chain).
    public var temperatureFirst: Bool
    /// Seed of the random generator.
    public var seed: UInt64

    /// Creates sampling parameters (defaults: the official LLaMA-Adapter sampler).
    public init(temperature: Float = 0.1, topP: Float = 0.75, topK: Int = 0, minP: Float = 0, repeatPenalty: Float = 1,
                repeatLastN: Int = 64, temperatureFirst: Bool = true, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.minP = minP
        self.repeatPenalty = repeatPenalty
        self.repeatLastN = repeatLastN
        self.temperatureFirst = temperatureFirst
        self.seed = seed
    }

    /// The official LLaMA-Adapter sampler (`llama_adapter.py` generate: temperature 0.1, top-p 0.75).
    public static let official = SamplingParameters()

    /// llama.cpp's defaults (`common/common.h`): temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, no
    /// repeat penalty (1.0 over the last 64 tokens), filters before temperature.
    public static let llamaCpp = SamplingParameters(temperature: 0.8, topP: 0.95, topK: 40, minP: 0.05, repeatPenalty: 1,
                                                    repeatLastN: 64, temperatureFirst: false)

    /// Greedy decoding.
    public static let greedy = SamplingParameters(temperature: 0, topP: 1)

    /// Checks ranges; throws a message naming the flag.
    public func validate() throws {
        guard temperature >= 0, temperature.isFinite else { throw SamplingError("--temperature must be a non-negative number") }
        guard topP > 0, topP <= 1 else { throw SamplingError("--top-p must be in (0, 1]") }
        guard topK >= 0 else { throw SamplingError("--top-k must be non-negative") }
        guard minP >= 0, minP <= 1 else { throw SamplingError("--min-p must be in [0, 1]") }
        guard repeatPenalty > 0, repeatPenalty.isFinite else { throw SamplingError("--repeat-penalty must be positive") }
        guard repeatLastN >= -1 else { throw SamplingError("--repeat-last-n must be -1, 0 or positive") }
    }
}

/// Sampling settings out of range.
public struct SamplingError: Error, CustomStringConvertible, Sendable {
    /// The one-line message.
    public let description: String
    init(_ message: String) { description = message }
}

/// Picks the next token from logits: greedy, or repeat penalty + temperature + top-k/top-p/min-p, in the
/// official order or llama.cpp's (`SamplingParameters.temperatureFirst`).
public struct Sampler: Sendable {
    /// Settings in use.
    public let parameters: SamplingParameters
    private var rng: SeededGenerator
    /// Recent tokens, for the repeat penalty.
    private var history: [Int] = []

    /// A sampler seeded from `parameters.seed`.
    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        rng = SeededGenerator(seed: parameters.seed)
    }

    /// Records a token the model has seen (prompt or generated), for the repeat penalty.
    public mutating func accept(_ token: Int) {
        let n = parameters.repeatLastN
        guard parameters.repeatPenalty != 1, n != 0 else { return }
        history.append(token)
        if n > 0, history.count > 2 * n { history.removeFirst(history.count - n) }
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
    public mutating func sample(_ raw: UnsafeBufferPointer<Float>) -> Int {
        let p = parameters
        let penalised = penalise(raw)
        if let penalised {
            return penalised.withUnsafeBufferPointer { sample(logits: $0, p) }
        }
        return sample(logits: raw, p)
    }

    /// llama.cpp's penalty on the distinct recent tokens, or nil when it changes nothing.
    private func penalise(_ raw: UnsafeBufferPointer<Float>) -> [Float]? {
        let p = parameters
        guard p.repeatPenalty != 1, p.repeatLastN != 0, !history.isEmpty else { return nil }
        var logits = Array(raw)
        let recent = p.repeatLastN < 0 ? history[...] : history.suffix(p.repeatLastN)
        for id in Set(recent) where id >= 0 && id < logits.count {
            logits[id] = logits[id] > 0 ? logits[id] / p.repeatPenalty : logits[id] * p.repeatPenalty
        }
        return logits
    }

    private mutating func sample(logits: UnsafeBufferPointer<Float>, _ p: SamplingParameters) -> Int {
        if p.temperature <= 0 { return Sampler.argmax(logits) }
        // The filters see softmax(logits / t) with t the temperature (official order) or 1 (llama.cpp's),
        // computed in f64 for a stable cumulative sum.
        let filterT = p.temperatureFirst ? Double(p.temperature) : 1
        var maxLogit = -Float.infinity
        for v in logits where v > maxLogit { maxLogit = v }
        var probs = [Double](repeating: 0, count: logits.count)
        var total = 0.0
        for i in 0..<logits.count {
            let e = exp((Double(logits[i]) - Double(maxLogit)) / filterT)
            probs[i] = e
            total += e
        }
        // Sorting the whole vocabulary per token is slow; tokens below 1e-12 of the total can hold at most
        // vocab * 1e-12 of the mass, so for top-p < 1 - 1e-6 the cut always falls before them.
        let floor = (p.topP < 0.999999 || p.topK > 0 || p.minP > 0) ? total * 1e-12 : 0
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
        if p.minP > 0, let top = order.first {
            let threshold = Double(p.minP) * probs[top]
            if let cut = order.prefix(keep).firstIndex(where: { probs[$0] < threshold }) { keep = cut }
        }
        keep = max(keep, 1)
        let kept = order.prefix(keep)
        if !p.temperatureFirst {
            // Temperature last: re-weight the kept tokens by softmax(logits / temperature).
            for id in kept { probs[id] = exp((Double(logits[id]) - Double(maxLogit)) / Double(p.temperature)) }
        }
        let mass = kept.reduce(0.0) { $0 + probs[$1] }
        var u = rng.nextUnit() * mass
        for id in kept {
            u -= probs[id]
            if u < 0 { return id }
        }
        return kept.last!
    }
}
