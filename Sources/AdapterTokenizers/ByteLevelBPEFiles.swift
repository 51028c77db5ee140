// Loading a byte-level BPE tokenizer from a Hugging Face `tokenizer.json` (the `tokenizers` library's
// serialization), plus `tokenizer_config.json` beside it when present. Only what GPT-2, SmolLM2,
// Llama-3 and Qwen2 files use is accepted; anything else is refused with a message naming the field.

import Foundation

extension ByteLevelBPETokenizer {
    /// Loads `tokenizer.json`, and `tokenizer_config.json` from the same folder if it exists (for
    /// `bos_token`, `eos_token`, `add_bos_token`).
    ///
    /// Accepted: `model` of type BPE (`vocab`; `merges` as `"a b"` strings or `["a", "b"]` pairs;
    /// `unk_token`, `fuse_unk`, `ignore_merges`; no dropout, no subword prefix/suffix, no byte fallback);
    /// `added_tokens` (special ones become CONTROL, the others USER_DEFINED; `lstrip`/`rstrip` honoured;
    /// `single_word` refused); `normalizer` null or NFC; `pre_tokenizer` a ByteLevel, or a Sequence of
    /// Digits / Split (with the GPT-2, Llama-3 or Qwen2 regex, Isolated) ending in ByteLevel, with
    /// `add_prefix_space` false; `decoder` ByteLevel. BOS is added when `add_bos_token` says so, else when
    /// the post-processor's TemplateProcessing starts with a special token (Llama-3).
    public convenience init(tokenizerJSON path: String) throws {
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw TokenizerError("tokenizer file not found: \(path)")
        }
        guard !isDirectory.boolValue else {
            throw TokenizerError("\(path) is a directory, not a tokenizer.json file")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TokenizerError("cannot read tokenizer file \(path)")
        }
        let configURL = url.deletingLastPathComponent().appendingPathComponent("tokenizer_config.json")
        let config = FileManager.default.contents(atPath: configURL.path)
        do {
            try self.init(tokenizerJSONData: data, configData: config)
        } catch let error as TokenizerError {
            throw TokenizerError("\(path): \(error.message)")
        }
    }

    /// Loads the bytes of a `tokenizer.json` (and optionally of a `tokenizer_config.json`).
    /// Ids at or above this are refused (real vocabularies have at most a few hundred thousand tokens), so a
    /// file cannot make the id table huge or overflow.
    static let maxVocabularyId = 1 << 24

    convenience init(tokenizerJSONData data: Data, configData: Data? = nil) throws {
        let root: [String: Any]
        do {
            guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw TokenizerError("not a tokenizer.json: the top level is not an object")
            }
            root = object
        } catch let error as TokenizerError {
            throw error
        } catch {
            throw TokenizerError("not a tokenizer.json: invalid JSON (\(error.localizedDescription))")
        }

        // model
        guard let model = root["model"] as? [String: Any] else { throw TokenizerError("no \"model\" object") }
        let modelType = model["type"] as? String ?? "BPE"
        guard modelType == "BPE" else {
            throw TokenizerError("model type \(modelType) is not supported; only byte-level BPE is")
        }
        if let dropout = model["dropout"] as? Double, dropout != 0 {
            throw TokenizerError("BPE dropout \(dropout) is not supported")
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let value = model[key] as? String, !value.isEmpty {
                throw TokenizerError("BPE \(key) \"\(value)\" is not supported by byte-level BPE")
            }
        }
        if model["byte_fallback"] as? Bool == true {
            throw TokenizerError("BPE byte_fallback is not supported by byte-level BPE")
        }
        guard let vocab = model["vocab"] as? [String: Any] else { throw TokenizerError("model.vocab is missing") }
        var textsById: [Int: String] = [:]
        textsById.reserveCapacity(vocab.count)
        for (text, value) in vocab {
            guard let id = (value as? NSNumber)?.intValue, id >= 0 else {
                throw TokenizerError("model.vocab entry \"\(text)\" has no valid id")
            }
            guard id < Self.maxVocabularyId else { throw TokenizerError("model.vocab entry \"\(text)\" has id \(id), beyond any real vocabulary (at most \(Self.maxVocabularyId))") }
            if let other = textsById[id] {
                throw TokenizerError("model.vocab gives id \(id) to both \"\(other)\" and \"\(text)\"")
            }
            textsById[id] = text
        }
        var merges: [(String, String)] = []
        if let list = model["merges"] as? [Any] {
            merges.reserveCapacity(list.count)
            for (rank, item) in list.enumerated() {
                if let string = item as? String {
                    let chars = Array(string.utf8)
                    guard chars.count > 1, let space = chars[1...].firstIndex(of: 0x20) else {
                        throw TokenizerError("merge \(rank) \"\(string)\" is not two tokens separated by a space")
                    }
                    merges.append((String(decoding: chars[..<space], as: UTF8.self),
                                   String(decoding: chars[(space + 1)...], as: UTF8.self)))
                } else if let pair = item as? [Any], pair.count == 2, let a = pair[0] as? String, let b = pair[1] as? String {
                    merges.append((a, b))
                } else {
                    throw TokenizerError("merge \(rank) is neither \"a b\" nor [\"a\", \"b\"]")
                }
            }
        } else if model["merges"] != nil && !(model["merges"] is NSNull) {
            throw TokenizerError("model.merges is not a list")
        }
        let ignoreMerges = model["ignore_merges"] as? Bool ?? false
        let fuseUnknown = model["fuse_unk"] as? Bool ?? false
        let unkText = model["unk_token"] as? String

        // added_tokens
        var types: [Int: TokenType] = [:]
        var strip: [Int: (Bool, Bool)] = [:]
        for item in root["added_tokens"] as? [Any] ?? [] {
            guard let token = item as? [String: Any], let id = (token["id"] as? NSNumber)?.intValue, id >= 0,
                  let content = token["content"] as? String else {
                throw TokenizerError("an added_tokens entry has no id or content")
            }
            guard id < Self.maxVocabularyId else { throw TokenizerError("added token \"\(content)\" has id \(id), beyond any real vocabulary (at most \(Self.maxVocabularyId))") }
            if token["single_word"] as? Bool == true {
                throw TokenizerError("added token \"\(content)\" has single_word, which is not supported")
            }
            // Hugging Face decodes an added token's id as its content, whatever model.vocab says.
            textsById[id] = content
            types[id] = token["special"] as? Bool == true ? .control : .userDefined
            let lstrip = token["lstrip"] as? Bool ?? false
            let rstrip = token["rstrip"] as? Bool ?? false
            if lstrip || rstrip { strip[id] = (lstrip, rstrip) }
        }

        guard let maxId = textsById.keys.max() else { throw TokenizerError("the vocabulary is empty") }
        var tokens: [String] = []
        tokens.reserveCapacity(maxId + 1)
        for id in 0...maxId {
            guard let text = textsById[id] else {
                throw TokenizerError("the vocabulary has no token with id \(id); ids must be 0..<\(maxId + 1) without gaps")
            }
            tokens.append(text)
        }
        let tokenTypes = (0...maxId).map { types[$0] ?? .normal }

        // normalizer, pre_tokenizer, decoder
        let normalizesNFC = try parseNormalizer(root["normalizer"])
        let stages = try parsePreTokenizer(root["pre_tokenizer"])
        try checkDecoder(root["decoder"])

        // BOS / EOS / UNK
        let ids = Dictionary(tokens.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        var config: [String: Any] = [:]
        if let configData, let object = try? JSONSerialization.jsonObject(with: configData) as? [String: Any] {
            config = object
        }
        func configTokenId(_ key: String) -> Int? {
            if let text = config[key] as? String { return ids[text] }
            if let object = config[key] as? [String: Any], let text = object["content"] as? String { return ids[text] }
            return nil
        }
        let templateBos = templateFirstSpecialToken(root["post_processor"]).flatMap { ids[$0] }
        let bosId = configTokenId("bos_token") ?? templateBos
        let eosId = configTokenId("eos_token")
        let addBos = (config["add_bos_token"] as? Bool).map { $0 && bosId != nil } ?? (templateBos != nil)
        var unkId = configTokenId("unk_token")
        var unknownForMissingBytes: Int?
        if let unkText {
            guard let id = ids[unkText] else { throw TokenizerError("model.unk_token \"\(unkText)\" is not in the vocabulary") }
            unkId = id
            unknownForMissingBytes = id
        }

        try self.init(tokens: tokens, types: tokenTypes, merges: merges, strictMerges: true, bosId: bosId, eosId: eosId,
                      unkId: unkId, addBosToken: addBos, preTokenizer: PreTokenizer(stages: stages),
                      ignoreMerges: ignoreMerges, normalizesNFC: normalizesNFC,
                      unknownForMissingBytes: unknownForMissingBytes, fuseUnknown: fuseUnknown, strip: strip)
    }
}

// MARK: - Pipeline parts

/// The regexes of Split pre-tokenizers this tokenizer matches by hand, as tokenizer.json files spell them
/// (and llama.cpp's rewrites without `(?i:`).
private let knownSplitRegexes: [String: PreTokenizer.Stage] = [
    #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#: .gpt2,
    #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"#: .gpt2,
    #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#:
        .llama3(maxDigits: 3),
    #"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#:
        .llama3(maxDigits: 3),
    #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#:
        .llama3(maxDigits: 1),
    #"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#:
        .llama3(maxDigits: 1),
]

/// `normalizer`: null (or an empty Sequence) means none; NFC is supported.
private func parseNormalizer(_ value: Any?) throws -> Bool {
    guard let value, !(value is NSNull) else { return false }
    guard let object = value as? [String: Any], let type = object["type"] as? String else {
        throw TokenizerError("normalizer is not an object with a type")
    }
    switch type {
    case "NFC":
        return true
    case "Sequence":
        let parts = object["normalizers"] as? [Any] ?? []
        var nfc = false
        for part in parts { nfc = try parseNormalizer(part) || nfc }
        return nfc
    default:
        throw TokenizerError("normalizer \(type) is not supported (only NFC or none)")
    }
}

/// `pre_tokenizer` as stages. The ByteLevel step must come last: it maps bytes to the byte alphabet, and
/// splits (GPT-2 regex) only when `use_regex`.
private func parsePreTokenizer(_ value: Any?) throws -> [PreTokenizer.Stage] {
    guard let value, !(value is NSNull) else {
        throw TokenizerError("pre_tokenizer is null; byte-level BPE needs a ByteLevel pre-tokenizer")
    }
    var steps: [[String: Any]] = []
    func flatten(_ value: Any) throws {
        guard let object = value as? [String: Any], let type = object["type"] as? String else {
            throw TokenizerError("pre_tokenizer is not an object with a type")
        }
        if type == "Sequence" {
            for part in object["pretokenizers"] as? [Any] ?? [] { try flatten(part) }
        } else {
            steps.append(object)
        }
    }
    try flatten(value)
    guard let last = steps.last, last["type"] as? String == "ByteLevel" else {
        throw TokenizerError("pre_tokenizer must end with ByteLevel; only byte-level BPE is supported")
    }
    var stages: [PreTokenizer.Stage] = []
    for (index, step) in steps.enumerated() {
        let type = step["type"] as? String ?? ""
        switch type {
        case "ByteLevel":
            guard index == steps.count - 1 else {
                throw TokenizerError("pre_tokenizer has a step after ByteLevel, which is not supported")
            }
            if step["add_prefix_space"] as? Bool == true {
                throw TokenizerError("ByteLevel add_prefix_space=true is not supported")
            }
            if step["use_regex"] as? Bool ?? true { stages.append(.gpt2) }
        case "Digits":
            stages.append(.digits(individual: step["individual_digits"] as? Bool ?? false))
        case "Split":
            guard let pattern = step["pattern"] as? [String: Any], let regex = pattern["Regex"] as? String else {
                throw TokenizerError("Split pre-tokenizer without a Regex pattern is not supported")
            }
            let behavior = step["behavior"] as? String ?? ""
            guard behavior == "Isolated", step["invert"] as? Bool != true else {
                throw TokenizerError("Split pre-tokenizer with behavior \(behavior)\(step["invert"] as? Bool == true ? ", inverted" : "") is not supported (only Isolated)")
            }
            guard let stage = knownSplitRegexes[regex] else {
                throw TokenizerError("Split regex \(regex) is not supported (only the GPT-2, Llama-3 and Qwen2 regexes)")
            }
            stages.append(stage)
        default:
            throw TokenizerError("pre-tokenizer \(type) is not supported")
        }
    }
    return stages
}

/// `decoder` must be ByteLevel (possibly alone in a Sequence).
private func checkDecoder(_ value: Any?) throws {
    guard let object = value as? [String: Any], let type = object["type"] as? String else {
        throw TokenizerError("decoder is missing; byte-level BPE needs the ByteLevel decoder")
    }
    if type == "ByteLevel" { return }
    if type == "Sequence", let parts = object["decoders"] as? [Any], parts.count == 1 {
        return try checkDecoder(parts[0])
    }
    throw TokenizerError("decoder \(type) is not supported (only ByteLevel)")
}

/// The special token a TemplateProcessing post-processor puts first in a single sequence (Llama-3's
/// `<|begin_of_text|>`), looking inside a Sequence post-processor.
private func templateFirstSpecialToken(_ value: Any?) -> String? {
    guard let object = value as? [String: Any], let type = object["type"] as? String else { return nil }
    if type == "Sequence" {
        for part in object["processors"] as? [Any] ?? [] {
            if let token = templateFirstSpecialToken(part) { return token }
        }
        return nil
    }
    guard type == "TemplateProcessing", let single = object["single"] as? [Any],
          let first = single.first as? [String: Any], let special = first["SpecialToken"] as? [String: Any] else {
        return nil
    }
    return special["id"] as? String
}
