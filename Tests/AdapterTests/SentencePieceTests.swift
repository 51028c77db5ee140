// SentencePieceTokenizer against the real `sentencepiece` library (0.1.97): golden cases written by
// tools/reference/make_tokenizer_cases.py into Tests/Fixtures/tokenizer/cases.json.

import Foundation
import XCTest
@testable import AdapterTokenizers

// MARK: - Fixtures

/// The golden cases and helpers, namespaced so that no name collides with other test files.
private enum SentencePieceGolden {
    static let directory = Fixtures.root.appendingPathComponent("tokenizer")

    static let modelPath = directory.appendingPathComponent("tokenizer.model").path

    struct EncodeCase: Decodable, Sendable {
        let text: String
        let ids: [Int]
        let pieces: [String]
        let decoded: String
    }

    struct DecodeCase: Decodable, Sendable {
        let ids: [Int]
        let decoded: String
    }

    struct Variant: Decodable, Sendable {
        let name: String
        let description: String
        let model_base64: String
        let vocab_size: Int
        let bos_id: Int
        let eos_id: Int
        let unk_id: Int
        let pad_id: Int
        let cases: [EncodeCase]
        let decode_cases: [DecodeCase]
    }

    struct InvalidModel: Decodable, Sendable {
        let name: String
        let error_contains: String
        let model_base64: String
    }

    struct File: Decodable, Sendable {
        let sentencepiece_version: String
        let vocab_size: Int
        let bos_id: Int
        let eos_id: Int
        let unk_id: Int
        let pad_id: Int
        let pieces: [String]
        let cases: [EncodeCase]
        let decode_cases: [DecodeCase]
        let variants: [Variant]
        let invalid_models: [InvalidModel]
    }

    /// Tests/Fixtures/tokenizer/cases.json.
    static let file: File = {
        let data = try! Data(contentsOf: directory.appendingPathComponent("cases.json"))
        return try! JSONDecoder().decode(File.self, from: data)
    }()

    static func tokenizer() throws -> SentencePieceTokenizer {
        try SentencePieceTokenizer(path: modelPath)
    }

    static func bytes(base64: String) -> [UInt8] {
        [UInt8](Data(base64Encoded: base64)!)
    }

    /// -1 in the fixtures means "none".
    static func optionalId(_ id: Int) -> Int? { id < 0 ? nil : id }

    /// SplitMix64: a small deterministic generator so fuzz inputs are the same on every run.
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Feeds `ids` one by one; checks that what was emitted is always a prefix of the full decode so
    /// far and that the chunks plus `finish()` add up to it.
    static func assertStreamingMatchesDecode(_ tokenizer: SentencePieceTokenizer, _ ids: [Int], _ label: String,
                                             file: StaticString = #filePath, line: UInt = #line) {
        var stream = StreamingDecoder(tokenizer: tokenizer)
        var emitted = ""
        for (k, id) in ids.enumerated() {
            emitted += stream.add(id)
            let soFar = tokenizer.decode(Array(ids[...k]))
            XCTAssertTrue(soFar.utf8.starts(with: emitted.utf8), "\(label): after \(k + 1) ids emitted \(emitted.debugDescription) but decode is \(soFar.debugDescription)", file: file, line: line)
        }
        emitted += stream.finish()
        XCTAssertEqual(emitted, tokenizer.decode(ids), "\(label): streamed text differs from decode", file: file, line: line)
    }
}

private typealias SPGolden = SentencePieceGolden

// MARK: - Tests

final class SentencePieceTests: XCTestCase {
    func testFixtureWasMadeWithTheReferenceLibrary() {
        XCTAssertEqual(SPGolden.file.sentencepiece_version, "0.1.97")
        XCTAssertGreaterThanOrEqual(SPGolden.file.cases.count, 120)
        XCTAssertGreaterThanOrEqual(SPGolden.file.decode_cases.count, 30)
    }

    func testModelFlagsAndSpecialIdsAreReadFromTheFile() throws {
        let tok = try SPGolden.tokenizer()
        XCTAssertEqual(tok.vocabSize, SPGolden.file.vocab_size)
        XCTAssertEqual(tok.bosId, SPGolden.optionalId(SPGolden.file.bos_id))
        XCTAssertEqual(tok.eosId, SPGolden.optionalId(SPGolden.file.eos_id))
        XCTAssertEqual(tok.unkId, SPGolden.file.unk_id)
        XCTAssertEqual(tok.padId, SPGolden.optionalId(SPGolden.file.pad_id))
        XCTAssertEqual(tok.model.trainerSpec.modelType, .bpe)
        XCTAssertTrue(tok.byteFallback)
        XCTAssertTrue(tok.addDummyPrefix)
        XCTAssertFalse(tok.removeExtraWhitespaces)
        XCTAssertTrue(tok.escapeWhitespaces)
        XCTAssertFalse(tok.treatWhitespaceAsSuffix)
        XCTAssertEqual(tok.model.normalizerSpec.name, "identity")
        XCTAssertEqual(tok.model.trainerSpec.padId, -1)
        XCTAssertEqual(tok.pieceType(3), .byte)
        XCTAssertEqual(tok.pieceType(1), .control)
        XCTAssertNil(tok.piece(-1))
        XCTAssertNil(tok.piece(tok.vocabSize))
    }

    func testEveryPieceMatchesTheLibrary() throws {
        let tok = try SPGolden.tokenizer()
        XCTAssertEqual((0..<tok.vocabSize).map { tok.piece($0)! }, SPGolden.file.pieces)
        for (id, piece) in SPGolden.file.pieces.enumerated() {
            XCTAssertEqual(tok.pieceToId(piece), id, piece)
        }
        XCTAssertEqual(tok.pieceToId("not a piece"), tok.unkId)
    }

    func testEncodeMatchesSentencePieceOnEveryCase() throws {
        let tok = try SPGolden.tokenizer()
        for c in SPGolden.file.cases {
            XCTAssertEqual(tok.encode(c.text), c.ids, "encode(\(c.text.debugDescription))")
            XCTAssertEqual(tok.encodeAsPieces(c.text), c.pieces, "encodeAsPieces(\(c.text.debugDescription))")
        }
    }

    func testDecodeOfEncodedTextMatchesSentencePiece() throws {
        let tok = try SPGolden.tokenizer()
        for c in SPGolden.file.cases {
            XCTAssertEqual(tok.decode(c.ids), c.decoded, "decode(encode(\(c.text.debugDescription)))")
        }
    }

    func testDecodeOfArbitraryIdsMatchesSentencePiece() throws {
        let tok = try SPGolden.tokenizer()
        for c in SPGolden.file.decode_cases {
            XCTAssertEqual(tok.decode(c.ids), c.decoded, "decode(\(c.ids))")
        }
    }

    func testEmptyStringEncodesToNoIds() throws {
        let tok = try SPGolden.tokenizer()
        XCTAssertEqual(tok.encode(""), [])
        XCTAssertEqual(tok.decode([]), "")
    }

    func testSpecialTokensWrittenInTextArePlainText() throws {
        let tok = try SPGolden.tokenizer()
        let ids = tok.encode("</s><s>")
        XCTAssertFalse(ids.contains(tok.eosId!))
        XCTAssertFalse(ids.contains(tok.bosId!))
        XCTAssertEqual(tok.decode(ids), "</s><s>")
    }

    func testEncodeWithBosAndEosAddsControlIds() throws {
        let tok = try SPGolden.tokenizer()
        let ids = tok.encode("Hello", addBos: true, addEos: true)
        XCTAssertEqual(ids.first, tok.bosId)
        XCTAssertEqual(ids.last, tok.eosId)
        XCTAssertEqual(Array(ids.dropFirst().dropLast()), tok.encode("Hello"))
        XCTAssertEqual(tok.decode(ids), "Hello")
    }

    func testOutOfRangeIdsAreSkippedWhenDecoding() throws {
        let tok = try SPGolden.tokenizer()
        let hello = tok.encode("Hello")
        XCTAssertEqual(tok.decode([-5] + hello + [tok.vocabSize, Int.max]), "Hello")
    }

    func testVariantModelsMatchSentencePiece() throws {
        XCTAssertEqual(SPGolden.file.variants.count, 6)
        for v in SPGolden.file.variants {
            let tok = try SentencePieceTokenizer(data: SPGolden.bytes(base64: v.model_base64))
            XCTAssertEqual(tok.vocabSize, v.vocab_size, v.name)
            XCTAssertEqual(tok.bosId, SPGolden.optionalId(v.bos_id), v.name)
            XCTAssertEqual(tok.eosId, SPGolden.optionalId(v.eos_id), v.name)
            XCTAssertEqual(tok.unkId, v.unk_id, v.name)
            XCTAssertEqual(tok.padId, SPGolden.optionalId(v.pad_id), v.name)
            for c in v.cases {
                XCTAssertEqual(tok.encode(c.text), c.ids, "\(v.name): encode(\(c.text.debugDescription))")
                XCTAssertEqual(tok.encodeAsPieces(c.text), c.pieces, "\(v.name): encodeAsPieces(\(c.text.debugDescription))")
                XCTAssertEqual(tok.decode(c.ids), c.decoded, "\(v.name): decode of \(c.text.debugDescription)")
            }
            for c in v.decode_cases {
                XCTAssertEqual(tok.decode(c.ids), c.decoded, "\(v.name): decode(\(c.ids))")
            }
        }
    }

    func testUnsupportedModelsAreRefusedWithAClearError() {
        XCTAssertEqual(SPGolden.file.invalid_models.count, 2)
        for m in SPGolden.file.invalid_models {
            XCTAssertThrowsError(try SentencePieceTokenizer(data: SPGolden.bytes(base64: m.model_base64)), m.name) { error in
                let message = String(describing: error)
                XCTAssertTrue(message.contains(m.error_contains), "\(m.name): \(message)")
                XCTAssertFalse(message.contains("\n"), "\(m.name): message should be one line")
            }
        }
    }

    func testMissingFileThrowsAReadableError() {
        let path = "/nonexistent/dir/tokenizer.model"
        XCTAssertThrowsError(try SentencePieceTokenizer(path: path)) { error in
            XCTAssertTrue(error is TokenizerError)
            XCTAssertEqual(String(describing: error), "tokenizer file not found: \(path)")
        }
        XCTAssertThrowsError(try SentencePieceTokenizer(path: SPGolden.directory.path)) { error in
            XCTAssertTrue(String(describing: error).contains("is a directory"))
        }
    }

    func testNonSentencePieceBytesAreRefused() {
        let samples: [[UInt8]] = [[], Array("{\"model\": {\"type\": \"BPE\"}}".utf8), Array(repeating: 0xFF, count: 64),
                                  [0x0A, 0x05, 0x0A, 0x01]]
        for sample in samples {
            XCTAssertThrowsError(try SentencePieceTokenizer(data: sample), "\(sample.prefix(16))") { error in
                XCTAssertTrue(String(describing: error).hasPrefix("not a SentencePiece model"), String(describing: error))
            }
        }
    }

    func testTruncatedModelIsRefused() throws {
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: SPGolden.modelPath)))
        XCTAssertThrowsError(try SentencePieceTokenizer(data: Array(data.prefix(data.count / 2)))) { error in
            XCTAssertTrue(String(describing: error).contains("truncated protobuf"), String(describing: error))
        }
    }

    /// Random bytes, every truncation point and random bit flips of a real model must either load or
    /// throw a TokenizerError; whatever loads must encode and decode without trapping.
    func testFuzzedModelBytesThrowOrLoadButNeverTrap() throws {
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: SPGolden.modelPath)))
        var rng = SPGolden.SeededGenerator(state: 0x5EED)
        var inputs: [[UInt8]] = []
        for _ in 0..<300 {
            let n = Int.random(in: 0..<512, using: &rng)
            inputs.append((0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) })
        }
        for cut in stride(from: 0, to: data.count, by: 3) { inputs.append(Array(data.prefix(cut))) }
        for _ in 0..<400 {
            var mutated = data
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                mutated[Int.random(in: 0..<mutated.count, using: &rng)] ^= UInt8(1) << UInt8.random(in: 0...7, using: &rng)
            }
            inputs.append(mutated)
        }
        var loaded = 0
        for input in inputs {
            do {
                let tok = try SentencePieceTokenizer(data: input)
                loaded += 1
                let ids = tok.encode("Hello wörld 🦙 \t x")
                _ = tok.decode(ids + [0, 1, 2, 3, tok.vocabSize - 1])
            } catch {
                XCTAssertTrue(error is TokenizerError)
                XCTAssertFalse(String(describing: error).isEmpty)
            }
        }
        XCTAssertGreaterThan(loaded, 0, "some bit flips (in scores, say) leave a loadable model")
    }

    func testStreamingDecoderChunksAddUpToTheFullDecode() throws {
        let tok = try SPGolden.tokenizer()
        for c in SPGolden.file.cases where c.ids.count <= 300 {
            SPGolden.assertStreamingMatchesDecode(tok, c.ids, "encode(\(c.text.debugDescription))")
        }
        for c in SPGolden.file.decode_cases {
            SPGolden.assertStreamingMatchesDecode(tok, c.ids, "decode case \(c.ids)")
        }
        for v in SPGolden.file.variants {
            let vt = try SentencePieceTokenizer(data: SPGolden.bytes(base64: v.model_base64))
            for c in v.cases where c.ids.count <= 300 {
                SPGolden.assertStreamingMatchesDecode(vt, c.ids, "\(v.name): \(c.text.debugDescription)")
            }
            for c in v.decode_cases {
                SPGolden.assertStreamingMatchesDecode(vt, c.ids, "\(v.name): decode case \(c.ids)")
            }
        }
    }

    func testStreamingHoldsBackAnIncompleteCharacter() throws {
        let tok = try SPGolden.tokenizer()
        let llama = [0xF0, 0x9F, 0xA6, 0x99].map { tok.pieceToId(String(format: "<0x%02X>", $0)) }
        var stream = StreamingDecoder(tokenizer: tok)
        XCTAssertEqual(stream.add(tok.pieceToId("▁a")), "a")
        XCTAssertEqual(stream.add(llama[0]), "")
        XCTAssertEqual(stream.add(llama[1]), "")
        XCTAssertEqual(stream.add(llama[2]), "")
        XCTAssertEqual(stream.add(llama[3]), "🦙")
        XCTAssertEqual(stream.add(tok.eosId!), "")
        XCTAssertEqual(stream.add(llama[0]), "")
        XCTAssertEqual(stream.finish(), "\u{FFFD}")
    }

    func testStreamingWithContextKeepsTheLeadingSpace() throws {
        let tok = try SPGolden.tokenizer()
        let prompt = tok.encode("The capital of France is")
        let answer = tok.encode("Paris.")  // the first piece carries the dummy-prefix `▁`
        var withContext = StreamingDecoder(tokenizer: tok, context: Array(prompt.suffix(2)))
        var fresh = StreamingDecoder(tokenizer: tok)
        var a = "", b = ""
        for id in answer {
            a += withContext.add(id)
            b += fresh.add(id)
        }
        a += withContext.finish()
        b += fresh.finish()
        XCTAssertEqual(a, " Paris.")
        XCTAssertEqual(b, "Paris.")
        XCTAssertEqual(b, tok.decode(answer))
    }

    func testEncodingALongTextIsFast() throws {
        let tok = try SPGolden.tokenizer()
        let text = String(repeating: "The quick brown fox jumps over the lazy dog. Café 🦙 日本語 1234567890\n", count: 2000)
        let start = Date()
        let ids = tok.encode(text)
        let seconds = Date().timeIntervalSince(start)
        XCTAssertEqual(tok.decode(ids), text)
        // ~150 KB; the merge loop is O(n log n) with no per-character allocation.
        XCTAssertLessThan(seconds, 5.0, "encoding \(text.utf8.count) bytes took \(seconds) s")
    }
}
