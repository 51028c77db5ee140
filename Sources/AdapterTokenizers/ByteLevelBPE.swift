// GPT-2-style byte-level BPE, as used by SmolLM2 and Llama-3/Qwen-style vocabularies: an exact
// re-implementation of Hugging Face `tokenizers` (0.23: AddedVocabulary, pre-tokenizers, BPE with merge
// ranks, ByteLevel decoder) that also loads llama.cpp's GGUF vocabulary arrays and follows llama.cpp
// where the two agree. Encoding = special tokens split out (SpecialTokens below) -> PreTokenizer (words)
// -> BPE over each word's UTF-8 bytes; decoding = token bytes -> UTF-8 with U+FFFD for invalid sequences.
// Checked id for id against `tokenizers` by Tests/Fixtures/bpe (tools/reference/make_bpe_cases.py).

import Foundation

/// A byte-level BPE tokenizer.
///
/// Vocabulary entries are strings in GPT-2's byte alphabet (every byte 0-255 is a printable character:
/// `Ġ` is the space byte, `Ċ` the newline byte), so BPE never sees an unknown character. This class
/// stores each entry's raw bytes and runs BPE on the text's UTF-8 bytes directly.
///
/// `encode` equals `tokenizers.Tokenizer.encode(text, add_special_tokens=False).ids` and llama.cpp's
/// `llama_tokenize(text, add_special=false, parse_special=true)`; `decode` equals
/// `Tokenizer.decode(ids, skip_special_tokens=False)`. Immutable after loading, so one instance can serve
/// many threads.
///
/// Where the two references disagree, this follows Hugging Face (the library the models were trained
/// with): (1) a byte missing from the vocabulary (SmolLM2 lacks 0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0,
/// 0xC1, 0xF1-0xFF) is dropped before merging, so its neighbours may merge (`"!\u{04}!"` -> `"!!"`), where
/// llama.cpp keeps them apart; (2) an unassigned code point (U+0378) counts as `[^\s\p{L}\p{N}]` in the
/// GPT-2 regex, where llama.cpp's hand-written splitter makes it a piece of its own; (3) `(?i:'s)` also
/// matches `'ſ` (U+017F), as Oniguruma's case folding does, where llama.cpp compares lower-cased ASCII.
public final class ByteLevelBPETokenizer: Tokenizer, Sendable {
    /// GGUF's `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
    public enum TokenType: Int, Sendable {
        /// Not one of the types below; decodes to nothing.
        case undefined = 0
        /// An ordinary vocabulary entry, reachable by BPE merges.
        case normal = 1
        /// The unknown token.
        case unknown = 2
        /// A special token such as `<|im_start|>`: split out of text only when special tokens are parsed,
        /// hidden by `decode(_:skipSpecial: true)`.
        case control = 3
        /// An added token that is not special: always split out of text, always decoded.
        case userDefined = 4
        /// A reserved entry; decodes to nothing.
        case unused = 5
        /// A `<0xNN>` byte token (SentencePiece-style byte fallback); decodes to that byte.
        case byte = 6
    }

    /// Number of entries; ids are `0..<vocabSize`.
    public let vocabSize: Int
    /// `tokenizer.ggml.bos_token_id`, or nil.
    public let bosId: Int?
    /// `tokenizer.ggml.eos_token_id`, or nil.
    public let eosId: Int?
    /// `tokenizer.ggml.unknown_token_id`, or nil. Byte-level BPE never produces it from text.
    public let unkId: Int?
    /// Whether the model wants BOS prepended to a prompt (`tokenizer.ggml.add_bos_token`; SmolLM2: false).
    /// `encode` never adds it; callers use `encode(_:addBos:addEos:)`.
    public let addBosToken: Bool
    /// The word splitter.
    public let preTokenizer: PreTokenizer
    /// Hugging Face BPE `ignore_merges` (llama.cpp sets it for Llama-3): a word that is a vocabulary entry as
    /// a whole becomes that entry without running the merges.
    public let ignoreMerges: Bool
    /// Ids that end generation, as llama.cpp's `special_eog_ids`: `eosId` and every token whose text is one
    /// of `<|eot_id|>`, `<|im_end|>`, `<|end|>`, `<end_of_turn>`, `<|endoftext|>`, `<|eom_id|>`, `<EOT>`,
    /// `<|end_of_text|>`. For SmolLM2: 0 (`<|endoftext|>`) and 2 (`<|im_end|>`).
    public let endOfGenerationIds: [Int]
    /// Whether prompts start with BOS (`addBosToken`).
    public var addsBOS: Bool { addBosToken }
    /// EOS and the end-of-generation ids.
    public var stopIds: Set<Int> { Set(endOfGenerationIds + [eosId].compactMap { $0 }) }
    /// Special-token text in a prompt is parsed as the token, as llama.cpp does.
    public var parsesSpecialTokens: Bool { true }

    /// Vocabulary entries as stored (`"Ġthe"`, `"<|im_start|>"`).
    private let tokens: [String]
    /// The type of each entry.
    private let types: [TokenType]
    /// Entry text -> id.
    private let idsByText: [String: Int32]
    /// Id of the one-byte entry for each byte value, -1 when the vocabulary lacks it.
    private let byteIds: [Int32]
    /// (left id, right id) -> (rank, merged id).
    private let merges: MergeTable
    /// Raw bytes of every entry whose text is all in the byte alphabet -> id; used by `ignoreMerges`.
    private let wholeWords: PieceTable?
    /// Special and user-defined tokens, in the order they are split out of text.
    private let specials: SpecialTokens
    /// How each id decodes.
    private let decodeTable: DecodeTable
    /// Hugging Face's NFC normalizer (Qwen2 tokenizer.json files); llama.cpp never normalizes.
    private let normalizesNFC: Bool
    /// Hugging Face BPE `unk_token` when set: a byte missing from the vocabulary becomes this id (fused
    /// with an unknown neighbour when `fuseUnknown`) instead of being dropped.
    private let unknownForMissingBytes: Int32
    private let fuseUnknown: Bool

    // MARK: - Loading

    /// Builds a tokenizer from the GGUF arrays llama.cpp reads: `tokenizer.ggml.tokens`,
    /// `tokenizer.ggml.merges` (`"left right"`, split at the first space after the first character, as
    /// llama.cpp does), `tokenizer.ggml.token_type` (nil: every entry normal), the special ids,
    /// `tokenizer.ggml.pre` (see `PreTokenizer.llamaCpp(name:)`) and `tokenizer.ggml.add_bos_token`.
    ///
    /// As in llama.cpp: an empty entry is renamed `[EMPTY_<id>]`; a duplicate entry is an error; entries
    /// whose text marks the end of a turn (`<|im_end|>`, `<|eot_id|>`, ...) are made CONTROL if they are
    /// not. Unlike llama.cpp, a merge whose parts or result are not entries is ignored (llama.cpp keeps it
    /// and falls back to byte entries if it ever fires; no real vocabulary has one).
    ///
    /// Cost: O(tokens + merges) hash-table insertions.
    public convenience init(tokens: [String], merges: [String], tokenTypes: [Int]?, bosId: Int?, eosId: Int?,
                            unkId: Int?, preTokenizer: String, addBosToken: Bool) throws {
        let (pre, ignoreMerges) = try PreTokenizer.llamaCpp(name: preTokenizer)
        if let tokenTypes, tokenTypes.count < tokens.count {
            throw TokenizerError("tokenizer.ggml.token_type has \(tokenTypes.count) entries for \(tokens.count) tokens")
        }
        var texts = tokens
        for i in texts.indices where texts[i].isEmpty { texts[i] = "[EMPTY_\(i)]" }
        var types = (0..<tokens.count).map { i -> TokenType in
            guard let tokenTypes else { return .normal }
            return TokenType(rawValue: tokenTypes[i]) ?? .undefined
        }
        for i in texts.indices where endOfTurnTexts.contains(texts[i]) && types[i] != .control {
            types[i] = .control
        }
        let pairs = merges.map { merge -> (String, String) in
            // llama.cpp: `word.find(' ', 1)`, so a merge may start with a space but not split there.
            let chars = Array(merge.utf8)
            guard chars.count > 1, let space = chars[1...].firstIndex(of: 0x20) else { return (merge, "") }
            return (String(decoding: chars[..<space], as: UTF8.self), String(decoding: chars[(space + 1)...], as: UTF8.self))
        }
        try self.init(tokens: texts, types: types, merges: pairs, strictMerges: false, bosId: bosId, eosId: eosId,
                      unkId: unkId, addBosToken: addBosToken, preTokenizer: pre, ignoreMerges: ignoreMerges,
                      normalizesNFC: false, unknownForMissingBytes: nil, fuseUnknown: false, strip: [:])
    }

    /// The designated initializer behind both loaders. `strip` gives (lstrip, rstrip) per added token id
    /// (Hugging Face `AddedToken`); `strictMerges` makes a merge of unknown entries an error, as in
    /// Hugging Face, instead of ignoring it.
    init(tokens: [String], types: [TokenType], merges: [(String, String)], strictMerges: Bool, bosId: Int?,
         eosId: Int?, unkId: Int?, addBosToken: Bool, preTokenizer: PreTokenizer, ignoreMerges: Bool,
         normalizesNFC: Bool, unknownForMissingBytes: Int?, fuseUnknown: Bool, strip: [Int: (Bool, Bool)]) throws {
        let n = tokens.count
        guard n > 0 else { throw TokenizerError("the vocabulary is empty") }
        guard n < Int(Int32.max) else { throw TokenizerError("the vocabulary has too many entries (\(n))") }
        for (name, id) in [("bos", bosId), ("eos", eosId), ("unk", unkId)] {
            if let id, id < 0 || id >= n {
                throw TokenizerError("\(name) id \(id) is outside the vocabulary (0..<\(n))")
            }
        }

        var idsByText: [String: Int32] = [:]
        idsByText.reserveCapacity(n)
        for (i, text) in tokens.enumerated() {
            if let previous = idsByText.updateValue(Int32(i), forKey: text) {
                throw TokenizerError("duplicate token in vocabulary: \"\(text)\" has ids \(previous) and \(i)")
            }
        }

        // Raw bytes of every entry. Entries outside the byte alphabet (added tokens such as "<|im start|>"
        // with a real space) keep their UTF-8 bytes, as Hugging Face's ByteLevel decoder does.
        var rawBytes: [[UInt8]] = []
        var inAlphabet: [Bool] = []
        rawBytes.reserveCapacity(n)
        inAlphabet.reserveCapacity(n)
        for text in tokens {
            if let bytes = ByteAlphabet.bytes(of: text) {
                rawBytes.append(bytes)
                inAlphabet.append(true)
            } else {
                rawBytes.append(Array(text.utf8))
                inAlphabet.append(false)
            }
        }

        var byteIds = [Int32](repeating: -1, count: 256)
        for byte in 0..<256 {
            if let id = idsByText[String(ByteAlphabet.character(of: UInt8(byte)))] { byteIds[byte] = id }
        }

        var table = MergeTable(capacity: merges.count)
        for (rank, (left, right)) in merges.enumerated() {
            guard let l = idsByText[left], let r = idsByText[right], let m = idsByText[left + right] else {
                if strictMerges {
                    throw TokenizerError("merge \(rank) (\"\(left) \(right)\") uses a token that is not in the vocabulary")
                }
                continue
            }
            table.insertIfAbsent(left: l, right: r, rank: Int32(rank), result: m)
        }

        var wholeWords: PieceTable?
        if ignoreMerges {
            var words = PieceTable(capacity: n)
            for i in 0..<n where inAlphabet[i] { _ = words.insertIfAbsent(rawBytes[i], value: Int32(i)) }
            wholeWords = words
        }

        var eog = Set<Int>()
        if let eosId { eog.insert(eosId) }
        for (i, text) in tokens.enumerated() where endOfGenerationTexts.contains(text) { eog.insert(i) }

        self.vocabSize = n
        self.bosId = bosId
        self.eosId = eosId
        self.unkId = unkId
        self.addBosToken = addBosToken
        self.preTokenizer = preTokenizer
        self.ignoreMerges = ignoreMerges
        self.endOfGenerationIds = eog.sorted()
        self.tokens = tokens
        self.types = types
        self.idsByText = idsByText
        self.byteIds = byteIds
        self.merges = table
        self.wholeWords = wholeWords
        self.specials = SpecialTokens(tokens: tokens, types: types, strip: strip)
        self.decodeTable = DecodeTable(rawBytes: rawBytes, texts: tokens, types: types)
        self.normalizesNFC = normalizesNFC
        self.unknownForMissingBytes = unknownForMissingBytes.map(Int32.init) ?? -1
        self.fuseUnknown = fuseUnknown
    }

    // MARK: - Vocabulary

    /// The entry for `id` as stored (`"Ġthe"`, `"<|im_end|>"`), or nil when out of range.
    public func piece(_ id: Int) -> String? {
        guard id >= 0 && id < vocabSize else { return nil }
        return tokens[id]
    }

    /// The type of `id`, or nil when out of range.
    public func tokenType(_ id: Int) -> TokenType? {
        guard id >= 0 && id < vocabSize else { return nil }
        return types[id]
    }

    /// The id of the entry stored as `piece` (`"<|im_start|>"`, `"Ġthe"`), or nil.
    public func id(ofPiece piece: String) -> Int? {
        idsByText[piece].map(Int.init)
    }

    // MARK: - Encode

    /// Token ids for `text`, without BOS/EOS, with special tokens written in the text parsed
    /// (`encode(text, parseSpecial: true)`).
    public func encode(_ text: String) -> [Int] {
        encode(text, parseSpecial: true)
    }

    /// Token ids for `text`, without BOS/EOS.
    ///
    /// Algorithm: (1) added tokens written in the text are split out (see `SpecialTokens`): CONTROL and
    /// UNKNOWN ones only when `parseSpecial`, USER_DEFINED ones always (llama.cpp `parse_special`;
    /// Hugging Face always parses them, like `parseSpecial: true`); (2) each remaining fragment is
    /// NFC-normalized if the tokenizer.json asks for it, then split into words by `preTokenizer`;
    /// (3) each word's UTF-8 bytes start as one-byte entries (a byte missing from the vocabulary is
    /// dropped before merging, or becomes the tokenizer.json's `unk_token` if it names one) and are merged
    /// pair by pair, always the adjacent pair whose merge has the lowest rank, the leftmost on ties.
    ///
    /// Cost: O(n log n) for n bytes: the special-token scan is O(n) plus one pass per special token that
    /// occurs; splitting is O(n); BPE on a word of m bytes does at most m-1 merges, each a heap pop and at
    /// most two pushes, with hash lookups that never allocate.
    public func encode(_ text: String, parseSpecial: Bool) -> [Int] {
        let bytes = Array(text.utf8)
        var output: [Int] = []
        output.reserveCapacity(bytes.count / 3 + 1)
        var work = Workspace()
        for fragment in specials.split(bytes, parseSpecial: parseSpecial) {
            switch fragment {
            case .token(let id):
                output.append(Int(id))
            case .text(let range):
                if normalizesNFC {
                    let normalized = String(decoding: bytes[range], as: UTF8.self).precomposedStringWithCanonicalMapping
                    let normalizedBytes = Array(normalized.utf8)
                    encodeFragment(normalizedBytes[...], into: &output, work: &work)
                } else {
                    encodeFragment(bytes[range], into: &output, work: &work)
                }
            }
        }
        return output
    }

    /// Reused buffers for one `encode` call.
    private struct Workspace {
        var text = ScalarText()
        var pieces: [Range<Int>] = []
        var scratch: [Range<Int>] = []
        var symbols: [Int32] = []
        var prev: [Int32] = []
        var next: [Int32] = []
        var heap: [UInt64] = []
    }

    private func encodeFragment(_ bytes: ArraySlice<UInt8>, into output: inout [Int], work: inout Workspace) {
        if bytes.isEmpty { return }
        work.text.load(bytes)
        preTokenizer.split(work.text, into: &work.pieces, scratch: &work.scratch)
        // Piece byte ranges are relative to the slice's start, as is the rebased buffer.
        bytes.withUnsafeBufferPointer { buffer in
            for piece in work.pieces {
                let range = work.text.byteRange(piece)
                encodeWord(UnsafeBufferPointer(rebasing: buffer[range]), into: &output, work: &work)
            }
        }
    }

    /// BPE on one word (Hugging Face `Word::merge_all`, llama.cpp `llm_tokenizer_bpe_session`).
    ///
    /// Symbols form a linked list over arrays; a min-heap holds candidate merges keyed by
    /// `rank << 32 | position`, so the lowest rank pops first and ties go to the leftmost pair. A popped
    /// candidate is stale when its left symbol was merged away, has no right neighbour, or the pair at
    /// its position no longer has that rank (ranks identify merges); stale candidates are skipped.
    private func encodeWord(_ word: UnsafeBufferPointer<UInt8>, into output: inout [Int], work: inout Workspace) {
        if let wholeWords {
            let id = wholeWords.find(word)
            if id >= 0 {
                output.append(Int(id))
                return
            }
        }
        if word.count == 1 {
            let id = byteIds[Int(word[0])]
            if id >= 0 {
                output.append(Int(id))
            } else if unknownForMissingBytes >= 0 {
                output.append(Int(unknownForMissingBytes))
            }
            return
        }

        // Initial symbols: one per byte; missing bytes are dropped (or become the unk token).
        work.symbols.removeAll(keepingCapacity: true)
        var lastWasUnknown = false
        for byte in word {
            let id = byteIds[Int(byte)]
            if id >= 0 {
                work.symbols.append(id)
                lastWasUnknown = false
            } else if unknownForMissingBytes >= 0 {
                if !(fuseUnknown && lastWasUnknown) { work.symbols.append(unknownForMissingBytes) }
                lastWasUnknown = true
            }
        }
        // The buffers are passed separately (not copied out of `work`) so they are reused, not reallocated.
        mergeSymbols(&work.symbols, prev: &work.prev, next: &work.next, heap: &work.heap, into: &output)
    }

    private func mergeSymbols(_ symbols: inout [Int32], prev: inout [Int32], next: inout [Int32], heap: inout [UInt64],
                              into output: inout [Int]) {
        let count = symbols.count
        if count <= 1 {
            if count == 1 { output.append(Int(symbols[0])) }
            return
        }
        prev.removeAll(keepingCapacity: true)
        next.removeAll(keepingCapacity: true)
        heap.removeAll(keepingCapacity: true)
        for i in 0..<count {
            prev.append(Int32(i - 1))
            next.append(i + 1 < count ? Int32(i + 1) : -1)
        }
        for i in 0..<count - 1 {
            if let merge = merges.find(symbols[i], symbols[i + 1]) {
                heapPush(&heap, UInt64(UInt32(bitPattern: merge.rank)) << 32 | UInt64(i))
            }
        }
        while !heap.isEmpty {
            let top = heapPop(&heap)
            let position = Int(top & 0xFFFF_FFFF)
            let rank = Int32(truncatingIfNeeded: top >> 32)
            let left = symbols[position]
            let right = next[position]
            if left < 0 || right < 0 { continue }
            guard let merge = merges.find(left, symbols[Int(right)]), merge.rank == rank else { continue }
            symbols[position] = merge.result
            symbols[Int(right)] = -1
            let after = next[Int(right)]
            next[position] = after
            if after >= 0 { prev[Int(after)] = Int32(position) }
            let before = prev[position]
            if before >= 0, let m = merges.find(symbols[Int(before)], merge.result) {
                heapPush(&heap, UInt64(UInt32(bitPattern: m.rank)) << 32 | UInt64(before))
            }
            if after >= 0, let m = merges.find(merge.result, symbols[Int(after)]) {
                heapPush(&heap, UInt64(UInt32(bitPattern: m.rank)) << 32 | UInt64(position))
            }
        }
        // Symbol 0 is never merged away (merges remove the right symbol), so the list starts there.
        var index: Int32 = 0
        while index >= 0 {
            output.append(Int(symbols[Int(index)]))
            index = next[Int(index)]
        }
    }

    // MARK: - Decode

    /// Text for `ids` with special tokens written out (`decode(ids, skipSpecial: false)`, Hugging Face's
    /// `skip_special_tokens=False`): `<|im_end|>` decodes to `"<|im_end|>"`.
    public func decode(_ ids: [Int]) -> String {
        decode(ids, skipSpecial: false)
    }

    /// Text for `ids`, as Hugging Face `Tokenizer.decode(ids, skip_special_tokens: skipSpecial)`.
    ///
    /// Normal entries contribute their bytes (the byte alphabet mapped back; an entry with a character
    /// outside the alphabet contributes its UTF-8 as is). Added tokens (CONTROL, USER_DEFINED, UNKNOWN)
    /// contribute their text verbatim and close the current run of bytes: each run is converted to UTF-8
    /// on its own, every maximal invalid subsequence becoming one U+FFFD (Rust's
    /// `String::from_utf8_lossy`), so a character split around an added token becomes U+FFFD on both
    /// sides. With `skipSpecial`, CONTROL and UNKNOWN tokens are dropped without closing the run.
    /// UNUSED and undefined entries and ids outside the vocabulary produce nothing.
    ///
    /// llama.cpp prints the same text for these ids when rendering special tokens
    /// (`llama_token_to_piece(..., special=true)`), except that it passes invalid UTF-8 through as raw
    /// bytes; without `special` it prints nothing for CONTROL tokens (that is `skipSpecial: true`).
    ///
    /// Cost: O(total bytes of the entries).
    public func decode(_ ids: [Int], skipSpecial: Bool) -> String {
        var result = ""
        var run: [UInt8] = []
        run.reserveCapacity(ids.count * 4)
        decodeTable.storage.withUnsafeBufferPointer { storage in
            for id in ids {
                guard id >= 0 && id < vocabSize else { continue }
                let start = Int(decodeTable.offsets[id]), end = Int(decodeTable.offsets[id + 1])
                switch decodeTable.kinds[id] {
                case .bytes:
                    run.append(contentsOf: storage[start..<end])
                case .special, .added:
                    if skipSpecial && decodeTable.kinds[id] == .special { continue }
                    if !run.isEmpty {
                        result += String(decoding: run, as: UTF8.self)
                        run.removeAll(keepingCapacity: true)
                    }
                    result += String(decoding: storage[start..<end], as: UTF8.self)
                case .nothing:
                    continue
                }
            }
        }
        if !run.isEmpty { result += String(decoding: run, as: UTF8.self) }
        return result
    }
}

// MARK: - Byte alphabet

/// GPT-2's `bytes_to_unicode`: the printable bytes `!`-`~`, `¡`-`¬`, `®`-`ÿ` stand for themselves; the
/// other 68 bytes, in increasing order, become U+0100, U+0101, ... (so space 0x20 is `Ġ` U+0120 and
/// newline 0x0A is `Ċ` U+010A).
enum ByteAlphabet {
    /// Character for each byte value.
    static let characters: [Unicode.Scalar] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            let printable = (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
            if printable {
                table[byte] = UInt32(byte)
            } else {
                table[byte] = next
                next += 1
            }
        }
        return table.map { Unicode.Scalar($0)! }
    }()

    /// Byte value for each code point below 324, -1 for the rest.
    static let bytesByCodePoint: [Int16] = {
        var table = [Int16](repeating: -1, count: 324)
        for (byte, scalar) in characters.enumerated() { table[Int(scalar.value)] = Int16(byte) }
        return table
    }()

    static func character(of byte: UInt8) -> Character { Character(characters[Int(byte)]) }

    /// The bytes an entry stands for, or nil when one of its characters is outside the alphabet.
    static func bytes(of text: String) -> [UInt8]? {
        let table = bytesByCodePoint
        var out: [UInt8] = []
        out.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            let value = Int(scalar.value)
            guard value < table.count, table[value] >= 0 else { return nil }
            out.append(UInt8(table[value]))
        }
        return out
    }
}

// MARK: - Tables

/// End-of-turn texts that llama.cpp forces to CONTROL (its EOT auto-detection in `llama_vocab::load`).
private let endOfTurnTexts: Set<String> = [
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>",
    "<|eom_id|>",
]

/// Texts llama.cpp treats as end of generation (a subset of its `special_eog_ids` list).
private let endOfGenerationTexts: Set<String> = [
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>",
    "<|end_of_text|>",
]

/// An open-addressing hash table from a pair of ids to a merge's rank and result, probed without
/// allocation. Duplicate pairs keep the first (lowest) rank, as llama.cpp's `bpe_ranks.emplace`.
struct MergeTable: Sendable {
    private var keys: [UInt64]
    private var values: [UInt64]
    private let mask: Int
    private static let empty = UInt64.max

    init(capacity: Int) {
        var size = 16
        while size < 2 * capacity { size <<= 1 }
        keys = [UInt64](repeating: Self.empty, count: size)
        values = [UInt64](repeating: 0, count: size)
        mask = size - 1
    }

    @inline(__always)
    private static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    @inline(__always)
    private func slot(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    mutating func insertIfAbsent(left: Int32, right: Int32, rank: Int32, result: Int32) {
        let k = Self.key(left, right)
        var s = slot(k)
        while keys[s] != Self.empty {
            if keys[s] == k { return }
            s = (s + 1) & mask
        }
        keys[s] = k
        values[s] = UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: result))
    }

    @inline(__always)
    func find(_ left: Int32, _ right: Int32) -> (rank: Int32, result: Int32)? {
        let k = Self.key(left, right)
        var s = slot(k)
        while true {
            let stored = keys[s]
            if stored == k {
                let v = values[s]
                return (Int32(truncatingIfNeeded: v >> 32), Int32(truncatingIfNeeded: v & 0xFFFF_FFFF))
            }
            if stored == Self.empty { return nil }
            s = (s + 1) & mask
        }
    }
}

/// How each id decodes, with all entry bytes in one buffer.
private struct DecodeTable: Sendable {
    enum Kind: UInt8, Sendable {
        /// Bytes that join the current run (normal entries, byte entries).
        case bytes
        /// Verbatim text that closes the run; dropped by `skipSpecial` (CONTROL, UNKNOWN).
        case special
        /// Verbatim text that closes the run; always kept (USER_DEFINED).
        case added
        /// No text (UNUSED, undefined).
        case nothing
    }

    let storage: [UInt8]
    let offsets: [Int32]
    let kinds: [Kind]

    /// `rawBytes` are the entries mapped back from the byte alphabet; added tokens use `texts` verbatim.
    init(rawBytes: [[UInt8]], texts: [String], types: [ByteLevelBPETokenizer.TokenType]) {
        var storage: [UInt8] = []
        var offsets: [Int32] = [0]
        var kinds: [Kind] = []
        storage.reserveCapacity(rawBytes.reduce(0) { $0 + $1.count })
        offsets.reserveCapacity(rawBytes.count + 1)
        kinds.reserveCapacity(rawBytes.count)
        for (index, type) in types.enumerated() {
            let bytes = rawBytes[index]
            switch type {
            case .normal:
                kinds.append(.bytes)
                storage += bytes
            case .byte:
                // `<0xNN>`: llama.cpp `token_to_byte` reads the two hex digits.
                let text = String(decoding: bytes, as: UTF8.self)
                if text.count == 6, text.hasPrefix("<0x"), let value = UInt8(text.dropFirst(3).prefix(2), radix: 16) {
                    kinds.append(.bytes)
                    storage.append(value)
                } else {
                    kinds.append(.bytes)
                    storage += bytes
                }
            case .control, .unknown:
                kinds.append(.special)
                storage += Array(texts[index].utf8)
            case .userDefined:
                kinds.append(.added)
                storage += Array(texts[index].utf8)
            case .unused, .undefined:
                kinds.append(.nothing)
            }
            offsets.append(Int32(storage.count))
        }
        self.storage = storage
        self.offsets = offsets
        self.kinds = kinds
    }
}

// MARK: - Special tokens

/// Splits added tokens (CONTROL, UNKNOWN and USER_DEFINED entries) out of text before pre-tokenization,
/// as llama.cpp's `tokenizer_st_partition`: tokens are taken longest first (ties: lower id first), and
/// each one splits every remaining text fragment at all its non-overlapping occurrences, left to right.
/// Hugging Face matches all added tokens in one leftmost-longest pass instead; the two agree unless two
/// added tokens overlap in the text (e.g. `<a>` and `a>b` in `<a>b`), which no supported vocabulary has.
/// A token with `lstrip`/`rstrip` (tokenizer.json only) also swallows the whitespace on that side.
struct SpecialTokens: Sendable {
    enum Fragment {
        case text(Range<Int>)
        case token(Int32)
    }

    private struct Entry: Sendable {
        let bytes: [UInt8]
        let id: Int32
        /// USER_DEFINED: split out even when special tokens are not parsed.
        let always: Bool
        let lstrip: Bool
        let rstrip: Bool
    }

    /// In splitting order: longest first, then lower id.
    private let entries: [Entry]
    /// Indices into `entries` by first byte, for the scan that finds which tokens occur at all.
    private let byFirstByte: [[Int]]

    init(tokens: [String], types: [ByteLevelBPETokenizer.TokenType], strip: [Int: (Bool, Bool)]) {
        var entries: [Entry] = []
        for (i, type) in types.enumerated() where type == .control || type == .unknown || type == .userDefined {
            let bytes = Array(tokens[i].utf8)
            if bytes.isEmpty { continue }
            let (lstrip, rstrip) = strip[i] ?? (false, false)
            entries.append(Entry(bytes: bytes, id: Int32(i), always: type == .userDefined, lstrip: lstrip, rstrip: rstrip))
        }
        entries.sort { $0.bytes.count != $1.bytes.count ? $0.bytes.count > $1.bytes.count : $0.id < $1.id }
        var byFirstByte = [[Int]](repeating: [], count: 256)
        for (k, entry) in entries.enumerated() { byFirstByte[Int(entry.bytes[0])].append(k) }
        self.entries = entries
        self.byFirstByte = byFirstByte
    }

    /// The fragments of `bytes`: text ranges and the added tokens between them.
    ///
    /// Cost: one pass over the text to see which tokens occur (at each byte, only tokens starting with that
    /// byte are compared), then one pass per occurring token over the text fragments still unsplit.
    func split(_ bytes: [UInt8], parseSpecial: Bool) -> [Fragment] {
        if bytes.isEmpty { return [] }
        if entries.isEmpty { return [.text(0..<bytes.count)] }
        return bytes.withUnsafeBufferPointer { text -> [Fragment] in
            var present = [Bool](repeating: false, count: entries.count)
            var anyPresent = false
            for i in 0..<text.count {
                for k in byFirstByte[Int(text[i])] where !present[k] && (parseSpecial || entries[k].always) {
                    if matches(entries[k].bytes, text, at: i, end: text.count) {
                        present[k] = true
                        anyPresent = true
                    }
                }
            }
            if !anyPresent { return [.text(0..<text.count)] }

            var fragments: [Fragment] = [.text(0..<text.count)]
            var next: [Fragment] = []
            for (k, entry) in entries.enumerated() where present[k] {
                next.removeAll(keepingCapacity: true)
                for fragment in fragments {
                    guard case .text(let range) = fragment else {
                        next.append(fragment)
                        continue
                    }
                    var start = range.lowerBound
                    var i = range.lowerBound
                    while i + entry.bytes.count <= range.upperBound {
                        guard matches(entry.bytes, text, at: i, end: range.upperBound) else {
                            i += 1
                            continue
                        }
                        var leftEnd = i
                        if entry.lstrip {
                            while leftEnd > start, let s = scalarBefore(text, leftEnd, start: start), s.isWhitespace {
                                leftEnd = s.start
                            }
                        }
                        if leftEnd > start { next.append(.text(start..<leftEnd)) }
                        next.append(.token(entry.id))
                        i += entry.bytes.count
                        if entry.rstrip {
                            while i < range.upperBound, let s = scalarAt(text, i, end: range.upperBound), s.isWhitespace {
                                i = s.end
                            }
                        }
                        start = i
                    }
                    if start < range.upperBound { next.append(.text(start..<range.upperBound)) }
                }
                swap(&fragments, &next)
            }
            return fragments
        }
    }

    @inline(__always)
    private func matches(_ token: [UInt8], _ text: UnsafeBufferPointer<UInt8>, at i: Int, end: Int) -> Bool {
        if i + token.count > end { return false }
        for j in 0..<token.count where text[i + j] != token[j] { return false }
        return true
    }

    /// The scalar starting at byte `i` (valid UTF-8), with its end and whether it is White_Space.
    private func scalarAt(_ text: UnsafeBufferPointer<UInt8>, _ i: Int, end: Int) -> (end: Int, isWhitespace: Bool)? {
        let lead = text[i]
        let length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4
        guard i + length <= end else { return nil }
        var value = UInt32(lead) & (length == 1 ? 0x7F : length == 2 ? 0x1F : length == 3 ? 0x0F : 0x07)
        for k in 1..<max(length, 1) { value = value << 6 | (UInt32(text[i + k]) & 0x3F) }
        return (i + length, ScalarClass.of(value) & ScalarClass.whitespace != 0)
    }

    /// The scalar ending at byte `i`, with its start and whether it is White_Space.
    private func scalarBefore(_ text: UnsafeBufferPointer<UInt8>, _ i: Int, start: Int) -> (start: Int, isWhitespace: Bool)? {
        var s = i - 1
        while s > start && text[s] & 0xC0 == 0x80 { s -= 1 }
        guard let scalar = scalarAt(text, s, end: i) else { return nil }
        return (s, scalar.isWhitespace)
    }
}

// MARK: - Heap

@inline(__always)
private func heapPush(_ heap: inout [UInt64], _ value: UInt64) {
    heap.append(value)
    var i = heap.count - 1
    while i > 0 {
        let parent = (i - 1) >> 1
        if heap[parent] <= value { break }
        heap[i] = heap[parent]
        i = parent
    }
    heap[i] = value
}

@inline(__always)
private func heapPop(_ heap: inout [UInt64]) -> UInt64 {
    let top = heap[0]
    let last = heap.removeLast()
    let n = heap.count
    if n > 0 {
        var i = 0
        while true {
            let l = 2 * i + 1
            if l >= n { break }
            let r = l + 1
            let child = (r < n && heap[r] < heap[l]) ? r : l
            if heap[child] >= last { break }
            heap[i] = heap[child]
            i = child
        }
        heap[i] = last
    }
    return top
}
