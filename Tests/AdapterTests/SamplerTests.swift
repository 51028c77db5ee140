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

    // llama.cpp's definitions (src/llama-sampling.cpp): min-p keeps tokens with p >= min_p * p_max; the
    // repeat penalty divides a positive logit (multiplies a negative one) of a recently seen token.

    func testMinPDropsTokensBelowTheFractionOfTheTopProbability() {
        // softmax([ln 6, ln 3, ln 1]) = (0.6, 0.3, 0.1); min-p 0.2 keeps p >= 0.12: tokens 0 and 1.
        let logits: [Float] = [log(6), log(3), log(1)]
        var s = Sampler(SamplingParameters(temperature: 1, topP: 1, minP: 0.2, seed: 5))
        var counts = [0, 0, 0]
        for _ in 0..<20000 { counts[s.sample(logits)] += 1 }
        XCTAssertEqual(counts[2], 0)
        XCTAssertEqual(Double(counts[0]) / 20000, 2.0 / 3.0, accuracy: 0.02)
    }

    func testRepeatPenaltyTurnsGreedyAwayFromRecentTokens() {
        let logits: [Float] = [2.0, 1.5, -1.0]
        var s = Sampler(SamplingParameters(temperature: 0, topP: 1, repeatPenalty: 1.5, repeatLastN: 4))
        XCTAssertEqual(s.sample(logits), 0)
        s.accept(0)          // 2.0 / 1.5 = 1.33 < 1.5
        XCTAssertEqual(s.sample(logits), 1)
        for t in [5, 6, 7, 8] { s.accept(t) }   // token 0 falls out of the last 4
        XCTAssertEqual(s.sample(logits), 0)
    }

    func testLlamaCppOrderAppliesTemperatureAfterTheFilters() {
        // Untempered (0.6, 0.3, 0.1) with top-p 0.5 keeps only token 0 in llama.cpp's order, whatever the temperature;
        // in the official order a high temperature flattens first and top-p then keeps more.
        let logits: [Float] = [log(6), log(3), log(1)]
        var cpp = Sampler(SamplingParameters(temperature: 5, topP: 0.5, temperatureFirst: false, seed: 1))
        XCTAssertTrue((0..<500).allSatisfy { _ in cpp.sample(logits) == 0 })
        var official = Sampler(SamplingParameters(temperature: 5, topP: 0.5, seed: 1))
        XCTAssertTrue((0..<500).contains { _ in official.sample(logits) != 0 })
    }

    func testModelsWithoutAdapterOrGenerationConfigGetLlamaCppDefaults() throws {
        let container = try ModelContainer.load(ModelConfiguration(model: try Fixtures.smolLM2(), maxSeqLen: 256))
        XCTAssertEqual(container.defaultSampling, .llamaCpp)
        XCTAssertEqual(container.samplingDefaultsSource, .llamaCpp)
        let adapted = try ModelContainer.load(ModelConfiguration(model: Fixtures.path("tiny_llama/model"),
                                                                 adapter: Fixtures.path("tiny_adapter/adapter_bias.pth"),
                                                                 clip: Fixtures.path("tiny_adapter/clip_tiny.pth")))
        XCTAssertEqual(adapted.defaultSampling, SamplingParameters(temperature: 0.1, topP: 0.75))
    }
}
