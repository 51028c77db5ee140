// ByteLevelBPETokenizer against Hugging Face `tokenizers` 0.23: golden cases written by
// tools/reference/make_bpe_cases.py into Tests/Fixtures/bpe/. The tiny tokenizer's cases always run;
// the SmolLM2 cases run when the GGUF is in the cache (.cache/smollm2, fetched by the set-up script).

import Foundation
import XCTest
import LlamaAdapter
@testable import AdapterTokenizers

// MARK: - Fixtures

/// The golden cases and helpers, namespaced so that no name collides with other test files.
private enum BPEGolden {
    static let directory = Fixtures.root.appendingPathComponent("bpe")

    static let tinyTokenizerPath = directory.appendingPathComponent("tiny_tokenizer.json").path

    /// The SmolLM2 GGUF in the git-ignored cache, relative to the repository root.
    static let smolLM2Path = SmolLM2Tests.ggufPath

    struct EncodeCase: Decodable {
        let text: String
        let ids: [Int]
        let decoded: String
        let decoded_skip: String
    }

    struct DecodeCase: Decodable {
        let ids: [Int]
        let decoded: String
        let decoded_skip: String
    }

    struct Variant: Decodable {
        let name: String
        let ignore_merges: Bool
        let merges_as_strings: Bool
        let unk_token: String?
        let fuse_unk: Bool
        /// New names of vocabulary entries (so that their bytes are missing) -> id.
        let renamed: [String: Int]
        let ids: [[Int]]
    }

    struct Split: Decodable {
        let name: String
        let pieces: [[String]]
    }

    struct TinyFile: Decodable {
        let vocab_size: Int
        let cases: [EncodeCase]
        let no_special_cases: [EncodeCase]
        let decode_cases: [DecodeCase]
        let variant_texts: [String]
        let variants: [Variant]
        let split_texts: [String]
        let splits: [Split]
    }

    struct SmolLM2File: Decodable {
        let vocab_size: Int
        let merges: Int
        let pre: String
        let bos_id: Int
        let eos_id: Int
        let unk_id: Int
        let add_bos_token: Bool
        let control_ids: [Int]
        let cases: [EncodeCase]
        let no_special_cases: [EncodeCase]
        let decode_cases: [DecodeCase]
    }

    static let tiny: TinyFile = load("tiny_cases.json")
    static let smolLM2: SmolLM2File = load("cases.json")

    static func load<T: Decodable>(_ name: String) -> T {
        let data = try! Data(contentsOf: directory.appendingPathComponent(name))
        return try! JSONDecoder().decode(T.self, from: data)
    }

    /// The raw tokenizer.json as a mutable dictionary, for variants.
    static func tinyJSON() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: tinyTokenizerPath))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    static func tokenizer(fromJSON object: [String: Any], config: [String: Any]? = nil) throws -> ByteLevelBPETokenizer {
        let data = try JSONSerialization.data(withJSONObject: object)
        let configData = try config.map { try JSONSerialization.data(withJSONObject: $0) }
        return try ByteLevelBPETokenizer(tokenizerJSONData: data, configData: configData)
    }

    /// SmolLM2's tokenizer from the GGUF arrays, the way the CLI builds it.
    static func smolLM2Tokenizer() throws -> ByteLevelBPETokenizer {
        let file = try GGUFFile(path: try Fixtures.smolLM2())
        return try ByteLevelBPETokenizer(
            tokens: file.stringArray("tokenizer.ggml.tokens") ?? [],
            merges: file.stringArray("tokenizer.ggml.merges") ?? [],
            tokenTypes: file.intArray("tokenizer.ggml.token_type"),
            bosId: file.int("tokenizer.ggml.bos_token_id"),
            eosId: file.int("tokenizer.ggml.eos_token_id"),
            unkId: file.int("tokenizer.ggml.unknown_token_id"),
            preTokenizer: file.string("tokenizer.ggml.pre") ?? "default",
            addBosToken: file.bool("tokenizer.ggml.add_bos_token") ?? false)
    }

    /// A few words of every kind, repeated to `bytes` bytes.
    static func longText(bytes: Int) -> String {
        let paragraph = "The quick brown fox jumps over the lazy dog; it's 2024 and 3.14159 is still π. "
            + "Ça coûte 12,50 €. 東京は日本の首都です。 Привет, мир! 🤖👍🏽\n\tdef f(x):\n        return x * 2\n"
        var text = ""
        while text.utf8.count < bytes { text += paragraph }
        return text
    }
}

private func describe(_ text: String) -> String {
    text.debugDescription.count > 120 ? String(text.debugDescription.prefix(120)) + "…" : text.debugDescription
}

// MARK: - Tiny tokenizer (always)

final class ByteLevelBPETests: XCTestCase {
    func testTinyTokenizerEncodesAndDecodesLikeHuggingFace() throws {
        let tokenizer = try ByteLevelBPETokenizer(tokenizerJSON: BPEGolden.tinyTokenizerPath)
        XCTAssertEqual(tokenizer.vocabSize, BPEGolden.tiny.vocab_size)
        XCTAssertGreaterThanOrEqual(BPEGolden.tiny.cases.count, 120)
        var failures = 0
        for c in BPEGolden.tiny.cases {
            let ids = tokenizer.encode(c.text)
            if ids != c.ids { failures += 1 }
            XCTAssertEqual(ids, c.ids, "encode \(describe(c.text))")
            XCTAssertEqual(tokenizer.decode(c.ids), c.decoded, "decode \(describe(c.text))")
            XCTAssertEqual(tokenizer.decode(c.ids, skipSpecial: true), c.decoded_skip, "decode skipping specials \(describe(c.text))")
        }
        XCTAssertEqual(failures, 0)
    }

    func testUserDefinedTokensAreSplitOutEvenWithoutParsingSpecialTokens() throws {
        let tokenizer = try ByteLevelBPETokenizer(tokenizerJSON: BPEGolden.tinyTokenizerPath)
        XCTAssertFalse(BPEGolden.tiny.no_special_cases.isEmpty)
        for c in BPEGolden.tiny.no_special_cases {
            XCTAssertEqual(tokenizer.encode(c.text, parseSpecial: false), c.ids, "encode \(describe(c.text))")
        }
        let user = try XCTUnwrap(tokenizer.id(ofPiece: "[USER]"))
        XCTAssertEqual(tokenizer.tokenType(user), .userDefined)
        XCTAssertTrue(tokenizer.encode("a[USER]b", parseSpecial: false).contains(user))
        XCTAssertFalse(tokenizer.encode("<|im_start|>", parseSpecial: false).contains(1))
    }

    func testDecodingInvalidUTF8AndAddedTokensMatchesHuggingFace() throws {
        let tokenizer = try ByteLevelBPETokenizer(tokenizerJSON: BPEGolden.tinyTokenizerPath)
        for c in BPEGolden.tiny.decode_cases {
            XCTAssertEqual(tokenizer.decode(c.ids), c.decoded, "decode \(c.ids)")
            XCTAssertEqual(tokenizer.decode(c.ids, skipSpecial: true), c.decoded_skip, "decode skipping specials \(c.ids)")
        }
    }

    func testVariantsOfTheTinyVocabularyMatchHuggingFace() throws {
        let texts = BPEGolden.tiny.variant_texts
        let files = BPEGolden.tiny
        let raw = try JSONSerialization.jsonObject(with: Data(contentsOf: BPEGolden.directory.appendingPathComponent("tiny_cases.json"))) as! [String: Any]
        let rawVariants = raw["variants"] as! [[String: Any]]
        for (variant, rawVariant) in zip(files.variants, rawVariants) {
            var json = try BPEGolden.tinyJSON()
            json["pre_tokenizer"] = rawVariant["pre_tokenizer"]
            json["normalizer"] = rawVariant["normalizer"] ?? NSNull()
            var model = json["model"] as! [String: Any]
            model["ignore_merges"] = variant.ignore_merges
            if variant.merges_as_strings {
                model["merges"] = (model["merges"] as! [[String]]).map { $0.joined(separator: " ") }
            }
            var vocab = model["vocab"] as! [String: Any]
            for (name, id) in variant.renamed {
                let old = vocab.first { ($0.value as? Int) == id }!.key
                vocab[old] = nil
                vocab[name] = id
            }
            model["vocab"] = vocab
            model["unk_token"] = variant.unk_token ?? NSNull()
            model["fuse_unk"] = variant.fuse_unk
            json["model"] = model
            let tokenizer = try BPEGolden.tokenizer(fromJSON: json)
            XCTAssertEqual(tokenizer.ignoreMerges, variant.ignore_merges, variant.name)
            for (text, ids) in zip(texts, variant.ids) {
                XCTAssertEqual(tokenizer.encode(text), ids, "\(variant.name): encode \(describe(text))")
            }
        }
    }

    func testPreTokenizerSplitsMatchHuggingFacePreTokenizeStr() throws {
        let texts = BPEGolden.tiny.split_texts
        XCTAssertEqual(Set(BPEGolden.tiny.splits.map(\.name)), ["gpt2", "smollm", "llama3", "qwen2"])
        for split in BPEGolden.tiny.splits {
            let pre = try PreTokenizer.llamaCpp(name: split.name).preTokenizer
            for (text, pieces) in zip(texts, split.pieces) {
                XCTAssertEqual(pre.split(text), pieces, "\(split.name): \(describe(text))")
            }
        }
    }

    func testLlamaCppDefaultPreTokenizerIsolatesPunctuationNumbersAndDigitTriples() throws {
        let pre = try PreTokenizer.llamaCpp(name: "default").preTokenizer
        // [\p{P}$+<=>^~|]+, then GPT-2, then \p{N}+ (which cuts the space off " 12345"), then [0-9]{3}.
        XCTAssertEqual(pre.split("Hello, world!! x+=1"), ["Hello", ",", " world", "!!", " x", "+=", "1"])
        XCTAssertEqual(pre.split("a 12345"), ["a", " ", "123", "45"])
        XCTAssertEqual(pre.split("1234567"), ["123", "456", "7"])
        XCTAssertEqual(pre.split("it's"), ["it", "'", "s"])
    }

    func testUnknownPreTokenizerNameIsAnError() {
        XCTAssertThrowsError(try ByteLevelBPETokenizer(tokens: ["a", "b"], merges: [], tokenTypes: nil, bosId: nil,
                                                       eosId: nil, unkId: nil, preTokenizer: "tekken", addBosToken: false)) { error in
            XCTAssertTrue("\(error)".contains("unsupported pre-tokenizer \"tekken\""), "\(error)")
        }
    }

    func testUnsupportedTokenizerJSONConfigurationsAreRefusedWithTheirName() throws {
        func refusal(_ change: (inout [String: Any]) -> Void) throws -> String {
            var json = try BPEGolden.tinyJSON()
            change(&json)
            do {
                _ = try BPEGolden.tokenizer(fromJSON: json)
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertTrue(try refusal { $0["pre_tokenizer"] = ["type": "Metaspace", "replacement": "▁"] }.contains("ByteLevel"))
        XCTAssertTrue(try refusal {
            $0["pre_tokenizer"] = ["type": "ByteLevel", "add_prefix_space": true, "use_regex": true]
        }.contains("add_prefix_space"))
        XCTAssertTrue(try refusal {
            $0["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [
                ["type": "Split", "pattern": ["Regex": "\\w+"], "behavior": "Isolated", "invert": false],
                ["type": "ByteLevel", "add_prefix_space": false, "use_regex": false]]]
        }.contains("Split regex"))
        XCTAssertTrue(try refusal { $0["normalizer"] = ["type": "NFKC"] }.contains("NFKC"))
        XCTAssertTrue(try refusal { $0["decoder"] = ["type": "Metaspace"] }.contains("decoder"))
        XCTAssertTrue(try refusal {
            var model = $0["model"] as! [String: Any]
            model["type"] = "WordPiece"
            $0["model"] = model
        }.contains("WordPiece"))
        XCTAssertTrue(try refusal {
            var model = $0["model"] as! [String: Any]
            var merges = model["merges"] as! [[String]]
            merges.append(["Ġ", "nonexistent"])
            model["merges"] = merges
            $0["model"] = model
        }.contains("not in the vocabulary"))
        XCTAssertThrowsError(try ByteLevelBPETokenizer(tokenizerJSON: "/nonexistent/tokenizer.json")) { error in
            XCTAssertTrue("\(error)".contains("not found"), "\(error)")
        }
    }

    func testTokenizerConfigBesideTheFileGivesBosEosAndAddBos() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("bpe-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try FileManager.default.copyItem(atPath: BPEGolden.tinyTokenizerPath, toPath: folder.appendingPathComponent("tokenizer.json").path)
        let config: [String: Any] = ["bos_token": "<|im_start|>", "eos_token": ["content": "<|im_end|>"], "add_bos_token": false]
        try JSONSerialization.data(withJSONObject: config).write(to: folder.appendingPathComponent("tokenizer_config.json"))
        let tokenizer = try ByteLevelBPETokenizer(tokenizerJSON: folder.appendingPathComponent("tokenizer.json").path)
        XCTAssertEqual(tokenizer.bosId, 1)
        XCTAssertEqual(tokenizer.eosId, 2)
        XCTAssertFalse(tokenizer.addBosToken)
        XCTAssertEqual(tokenizer.endOfGenerationIds, [0, 2])
        XCTAssertEqual(tokenizer.encode("Hi", addBos: true, addEos: true).first, 1)
    }

    func testTemplateProcessingWithALeadingSpecialTokenMeansAddBos() throws {
        var json = try BPEGolden.tinyJSON()
        json["post_processor"] = ["type": "Sequence", "processors": [
            ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true],
            ["type": "TemplateProcessing",
             "single": [["SpecialToken": ["id": "<|endoftext|>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
             "pair": [], "special_tokens": [:]]]]
        let tokenizer = try BPEGolden.tokenizer(fromJSON: json)
        XCTAssertEqual(tokenizer.bosId, 0)
        XCTAssertTrue(tokenizer.addBosToken)
        XCTAssertEqual(tokenizer.encode("x"), [tokenizer.id(ofPiece: "x")!], "encode itself never adds BOS")
    }

    func testVocabularyAccessors() throws {
        let tokenizer = try ByteLevelBPETokenizer(tokenizerJSON: BPEGolden.tinyTokenizerPath)
        XCTAssertEqual(tokenizer.piece(1), "<|im_start|>")
        XCTAssertEqual(tokenizer.tokenType(1), .control)
        XCTAssertEqual(tokenizer.id(ofPiece: "Ġ"), tokenizer.encode(" ").first)
        XCTAssertNil(tokenizer.piece(tokenizer.vocabSize))
        XCTAssertNil(tokenizer.piece(-1))
        XCTAssertEqual(tokenizer.encode(""), [])
        XCTAssertEqual(tokenizer.decode([]), "")
    }

    func testStreamingDecodeConcatenatesToTheFullDecode() throws {
        let tokenizer = try ByteLevelBPETokenizer(tokenizerJSON: BPEGolden.tinyTokenizerPath)
        let ids = tokenizer.encode("<|im_start|>assistant\nCafé 😀 naïve 東京<|im_end|>")
        var stream = StreamingDecoder(tokenizer: tokenizer)
        var text = ""
        for id in ids { text += stream.add(id) }
        text += stream.finish()
        XCTAssertEqual(text, tokenizer.decode(ids))
    }

    func testEncodingHundredKilobytesRoundTrips() throws {
        let tokenizer = try ByteLevelBPETokenizer(tokenizerJSON: BPEGolden.tinyTokenizerPath)
        let text = BPEGolden.longText(bytes: 100_000)
        // Speed is measured by `bench`, not asserted here; this checks a long input round-trips.
        let ids = tokenizer.encode(text)
        XCTAssertEqual(tokenizer.decode(ids), text)
    }

    // MARK: - SmolLM2 (when the GGUF is cached)

    func testSmolLM2FromGGUFEncodesAndDecodesLikeHuggingFace() throws {
        let tokenizer = try BPEGolden.smolLM2Tokenizer()
        let golden = BPEGolden.smolLM2
        XCTAssertEqual(tokenizer.vocabSize, golden.vocab_size)
        XCTAssertEqual(tokenizer.bosId, golden.bos_id)
        XCTAssertEqual(tokenizer.eosId, golden.eos_id)
        XCTAssertEqual(tokenizer.unkId, golden.unk_id)
        XCTAssertEqual(tokenizer.addBosToken, golden.add_bos_token)
        XCTAssertEqual(tokenizer.preTokenizer, PreTokenizer(stages: [.digits(individual: true), .gpt2]))
        XCTAssertEqual(golden.control_ids.filter { tokenizer.tokenType($0) == .control }, golden.control_ids)
        XCTAssertEqual(tokenizer.endOfGenerationIds, [0, 2])
        XCTAssertGreaterThanOrEqual(golden.cases.count, 120)
        var failures = 0
        for c in golden.cases {
            let ids = tokenizer.encode(c.text)
            if ids != c.ids { failures += 1 }
            XCTAssertEqual(ids, c.ids, "encode \(describe(c.text))")
            XCTAssertEqual(tokenizer.decode(c.ids), c.decoded, "decode \(describe(c.text))")
            XCTAssertEqual(tokenizer.decode(c.ids, skipSpecial: true), c.decoded_skip, "decode skipping specials \(describe(c.text))")
        }
        XCTAssertEqual(failures, 0)
        for c in golden.no_special_cases {
            XCTAssertEqual(tokenizer.encode(c.text, parseSpecial: false), c.ids, "encode without specials \(describe(c.text))")
        }
        for c in golden.decode_cases {
            XCTAssertEqual(tokenizer.decode(c.ids), c.decoded, "decode \(c.ids)")
            XCTAssertEqual(tokenizer.decode(c.ids, skipSpecial: true), c.decoded_skip, "decode skipping specials \(c.ids)")
        }
    }

    func testSmolLM2ChatPromptTokens() throws {
        let tokenizer = try BPEGolden.smolLM2Tokenizer()
        // `<|im_start|>user\nHi<|im_end|>`: the specials are single ids, "\n" is Ċ (198).
        XCTAssertEqual(tokenizer.encode("<|im_start|>user\nHi<|im_end|>"), [1, 4093, 198, 26843, 2])
        // Digits are split one by one, and the space before a number stays alone.
        XCTAssertEqual(tokenizer.encode("Hello world 12345"), [19556, 905, 216, 33, 34, 35, 36, 37])
        XCTAssertEqual(tokenizer.decode([1, 4093, 198, 26843, 2]), "<|im_start|>user\nHi<|im_end|>")
        XCTAssertEqual(tokenizer.decode([1, 4093, 198, 26843, 2], skipSpecial: true), "user\nHi")
    }

    func testSmolLM2EncodingHundredKilobytesRoundTrips() throws {
        let tokenizer = try BPEGolden.smolLM2Tokenizer()
        let text = BPEGolden.longText(bytes: 100_000)
        // Speed is measured by `bench`, not asserted here; this checks a long input round-trips.
        let ids = tokenizer.encode(text)
        XCTAssertEqual(tokenizer.decode(ids), text)
    }
}
