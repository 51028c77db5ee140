import LlamaAdapter
import XCTest

/// Sampling rules: greedy, the official top-p cut, top-k, seeding.
final class SamplerTests: XCTestCase {
    func testGreedyPicksFirstMaximum() {
        var s = Sampler(SamplingParameters(temperature: 0))
        XCTAssertEqual(s.sample([0.1, 3, 3, -1]), 1)
    }

    func testTopPKeepsOnlyTokensBeforeTheMassIsReached() {
        // probs ~ [0.6, 0.3, 0.1]: with p = 0.5 only the first survives (its preceding mass 0 <= p,
        // the second's preceding mass 0.6 > p).
        let logits: [Float] = [log(0.6), log(0.3), log(0.1)]
        var s = Sampler(SamplingParameters(temperature: 1, topP: 0.5, seed: 7))
        for _ in 0..<200 { XCTAssertEqual(s.sample(logits), 0) }
        var t = Sampler(SamplingParameters(temperature: 1, topP: 0.7, seed: 7))
        let picks = Set((0..<400).map { _ in t.sample(logits) })
        XCTAssertEqual(picks, [0, 1])
    }

    func testTopKRestrictsCandidates() {
        let logits: [Float] = [1, 1.1, 1.2, 1.3, 1.4]
        var s = Sampler(SamplingParameters(temperature: 1, topP: 1, topK: 2, seed: 3))
        let picks = Set((0..<300).map { _ in s.sample(logits) })
        XCTAssertEqual(picks, [3, 4])
    }

    func testSameSeedSameSamples() {
        let logits: [Float] = (0..<50).map { Float($0 % 7) * 0.3 }
        var a = Sampler(SamplingParameters(temperature: 1, topP: 1, seed: 42))
        var b = Sampler(SamplingParameters(temperature: 1, topP: 1, seed: 42))
        XCTAssertEqual((0..<100).map { _ in a.sample(logits) }, (0..<100).map { _ in b.sample(logits) })
    }

    func testSamplingFrequenciesFollowProbabilities() {
        let logits: [Float] = [log(0.7), log(0.2), log(0.1)]
        var s = Sampler(SamplingParameters(temperature: 1, topP: 1, seed: 11))
        var counts = [0, 0, 0]
        for _ in 0..<20000 { counts[s.sample(logits)] += 1 }
        XCTAssertEqual(Double(counts[0]) / 20000, 0.7, accuracy: 0.02)
        XCTAssertEqual(Double(counts[2]) / 20000, 0.1, accuracy: 0.02)
    }
}
