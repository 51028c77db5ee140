import XCTest
@testable import AdapterCore
@testable import AdapterModel

/// A long prompt prefilled in pieces (`DecoderOptions.prefillChunk`) must give the logits, and leave the cache,
/// of one pass, bit for bit: every kernel computes a position independently of the positions run beside it.
final class PrefillChunkTests: XCTestCase {
    /// Wide enough (K = 2048) for the integer GEMM of repacked panels, as in 7B; grouped-query attention.
    static let config = LlamaConfig(dim: 2048, nLayers: 1, nHeads: 16, nKVHeads: 4, vocabSize: 256, hiddenDim: 2048,
                                    maxSeqLen: 256)

    func model(_ dtype: DType) throws -> LlamaModel {
        let c = Self.config
        var weights = LlamaWeights.synthetic(config: c, dtype: dtype == .f32 ? .f32 : .f16)
        if ![DType.f32, .f16].contains(dtype) { weights = try weights.quantized(to: dtype).packedForInt8(pool: .shared) }
        return try LlamaModel(config: c, weights: weights, pool: .shared)
    }

    /// Prefills `prompt` with the given chunk, then decodes one token; returns both logits.
    func run(_ m: LlamaModel, prompt: [Int], chunk: Int, activations: ActivationPrecision, adapter: Bool) throws -> ([Float], [Float], Int) {
        let options = DecoderOptions(activations: activations, prefillChunk: chunk)
        let state = adapter ? DecoderState(model: m, capacity: 160, prompts: try m.makePrompts(visualQuery: nil), options: options)
                            : DecoderState(model: m, capacity: 160, options: options)
        let last = Array(try m.forward(tokens: prompt, state: state))
        let next = Array(try m.forward(tokens: [7], state: state))
        return (last, next, state.length)
    }

    func testAChunkedPrefillGivesTheLogitsAndCacheOfOnePass() throws {
        let prompt = (0..<101).map { ($0 * 37 + 11) % Self.config.vocabSize }
        for dtype in [DType.f32, .f16, .q8_0, .q4_0] {
            let base = try model(dtype)
            for adapter in [false, true] {
                let m = adapter ? try base.with(adapter: AdapterWeights.syntheticBias(config: Self.config, queryLen: 5, queryLayer: 1)) : base
                for activations in [ActivationPrecision.f32, .int8] where activations == .f32 || dtype == .q4_0 {
                    let whole = try run(m, prompt: prompt, chunk: 1024, activations: activations, adapter: adapter)
                    let pieces = try run(m, prompt: prompt, chunk: 32, activations: activations, adapter: adapter)
                    let what = "\(dtype) adapter \(adapter) \(activations)"
                    XCTAssertEqual(whole.2, 102, what)
                    XCTAssertEqual(pieces.2, 102, what)
                    XCTAssertTrue(whole.0.contains { $0 != 0 }, what)
                    XCTAssertEqual(whole.0, pieces.0, "\(what): the prompt's last logits")
                    XCTAssertEqual(whole.1, pieces.1, "\(what): the next token's logits (the cache the pieces left)")
                }
            }
        }
    }

    func testPiecesOffTheAttentionsQueryBlocksGiveTheSameBits() throws {
        let m = try model(.f16)
        let prompt = (0..<70).map { ($0 * 13 + 5) % Self.config.vocabSize }
        let whole = try run(m, prompt: prompt, chunk: 1024, activations: .f32, adapter: false)
        // 35 + 35: the second piece starts inside a block of 32 queries of the one-pass prefill.
        let odd = try run(m, prompt: prompt, chunk: 50, activations: .f32, adapter: false)
        XCTAssertEqual(whole.0, odd.0)
        XCTAssertEqual(whole.1, odd.1)
        // 101 tokens in pieces of at most 50: 33 + 34 + 34, never 50 + 50 + 1 (a one-token piece takes the f16
        // mat-vec, whose bits differ from the GEMM's).
        let long = (0..<101).map { ($0 * 29 + 3) % Self.config.vocabSize }
        let longWhole = try run(m, prompt: long, chunk: 1024, activations: .f32, adapter: false)
        let longPieces = try run(m, prompt: long, chunk: 50, activations: .f32, adapter: false)
        XCTAssertEqual(longWhole.0, longPieces.0)
        XCTAssertEqual(longWhole.1, longPieces.1)
    }

    func testATooLongPromptLeavesTheStateAsItWas() throws {
        let m = try model(.f16)
        let state = DecoderState(model: m, capacity: 100, options: DecoderOptions(prefillChunk: 32))
        _ = try m.forward(tokens: [1, 2, 3], state: state)
        XCTAssertThrowsError(try m.forward(tokens: Array(repeating: 4, count: 98), state: state)) { error in
            XCTAssertTrue("\(error)".contains("exceeds the context of 100"), "\(error)")
        }
        XCTAssertThrowsError(try m.forward(tokens: Array(repeating: 4, count: 60) + [999], state: state)) { error in
            XCTAssertTrue("\(error)".contains("outside the vocabulary"), "\(error)")
        }
        XCTAssertEqual(state.length, 3)
    }
}
