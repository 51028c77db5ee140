// LLaMA's tokenizer: an exact re-implementation of the `sentencepiece` library (v0.1.97) for BPE
// models with the identity normaliser. Encoding = Normalizer (normalizer.cc) -> BPEModel (bpe_model.cc)
// -> byte fallback / unknown runs (SentencePieceProcessor::PopulateSentencePieceText); decoding =
// SentencePieceProcessor::Decode. Checked id for id against the library by Tests/Fixtures/tokenizer/cases.json.

import Foundation

/// A SentencePiece BPE tokenizer loaded from a `tokenizer.model` file.
///
/// `encode` equals `sentencepiece.SentencePieceProcessor.encode(text)` and `decode` equals
/// `.decode(ids)` for every input, including byte fallback, unknown characters, user-defined and
/// UNUSED pieces. Immutable after loading, so one instance can serve many threads.
public final class SentencePieceTokenizer: Tokenizer, Sendable {
    /// The parsed model file.
    public let model: SentencePieceModel
    /// Number of pieces; ids are `0..<vocabSize`.
    public let vocabSize: Int
    /// Id of `<s>` (the trainer spec's bos_piece) when it is a CONTROL piece, as `sp.bos_id()`.
    public let bosId: Int?
    /// Id of `</s>` (the trainer spec's eos_piece) when it is a CONTROL piece, as `sp.eos_id()`.
    public let eosId: Int?
    /// Id of the UNKNOWN piece (`<unk>`); every model has exactly one.
    public let unkId: Int
    /// Id of the pad piece when it is a CONTROL piece, as `sp.pad_id()`; nil for LLaMA (pad_id -1).
    public let padId: Int?
    /// `NormalizerSpec.add_dummy_prefix`: a `▁` is prepended before encoding and one leading space is
    /// dropped when decoding.
    public let addDummyPrefix: Bool
    /// `NormalizerSpec.remove_extra_whitespaces`: leading, trailing and repeated spaces are dropped.
    public let removeExtraWhitespaces: Bool
    /// `NormalizerSpec.escape_whitespaces`: spaces become `▁` before segmentation.
    public let escapeWhitespaces: Bool
    /// `TrainerSpec.treat_whitespace_as_suffix`: the dummy `▁` is appended instead of prepended.
    public let treatWhitespaceAsSuffix: Bool
    /// `TrainerSpec.byte_fallback`: characters outside the vocabulary become `<0xNN>` pieces instead of `<unk>`.
    public let byteFallback: Bool
    /// Whether prompts start with BOS (true for LLaMA's tokenizer.model; GGUF's `add_bos_token` can say otherwise).
    public let addsBOS: Bool
    /// EOS ends generation.
    public var stopIds: Set<Int> { Set([eosId].compactMap { $0 }) }
    /// Special-token text in a prompt stays plain text, as in the official LLaMA code.
    public var parsesSpecialTokens: Bool { false }

    private let normalizer: SentencePieceNormalizer
    private let bpe: BPEModel
    /// Id for each byte value's `<0xNN>` piece (looked up like `PieceToId`), used by byte fallback.
    private let byteToId: [Int32]
    /// How `decode` renders each id.
    private let decodeKinds: [DecodeKind]
    /// What `<unk>` decodes to: `unk_surface`, by default `" ⁇ "`.
    private let unkSurface: [UInt8]

    private enum DecodeKind {
        /// CONTROL: no text.
        case control
        /// UNKNOWN: the unk surface.
        case unknown
        /// BYTE: one raw byte, decoded with its neighbours as UTF-8.
        case byte(UInt8)
        /// NORMAL, USER_DEFINED, UNUSED: the piece with `▁` shown as a space.
        case text
    }

    /// Loads a `tokenizer.model` file.
    public convenience init(path: String, addsBOS: Bool = true) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw TokenizerError("tokenizer file not found: \(path)")
        }
        guard !isDirectory.boolValue else {
            throw TokenizerError("\(path) is a directory, not a tokenizer.model file")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TokenizerError("cannot read tokenizer file \(path)")
        }
        do {
            try self.init(data: [UInt8](data), addsBOS: addsBOS)
        } catch let error as TokenizerError {
            throw TokenizerError("\(path): \(error.message)")
        }
    }

    /// Loads a serialized SentencePiece `ModelProto`. Throws when the bytes are not a SentencePiece
    /// model, when the model is not BPE, when it needs a normalisation rule other than identity, or
    /// when its pieces break SentencePiece's own load-time checks.
    public init(data: [UInt8], addsBOS: Bool = true) throws {
        self.addsBOS = addsBOS
        let model: SentencePieceModel
        do {
            model = try SentencePieceModel(data: data)
        } catch let error as TokenizerError {
            throw TokenizerError("not a SentencePiece model (\(error.message))")
        }
        guard !model.pieces.isEmpty else {
            throw TokenizerError("not a SentencePiece model: it has no pieces")
        }
        let trainer = model.trainerSpec
        guard trainer.modelType == .bpe else {
            throw TokenizerError("SentencePiece model_type \(String(describing: trainer.modelType).uppercased()) is not supported; only BPE is")
        }
        let normSpec = model.normalizerSpec
        guard normSpec.precompiledCharsmap.isEmpty else {
            throw TokenizerError("the model's normalizer \"\(normSpec.name)\" has a non-empty precompiled_charsmap; only the identity normalizer (empty charsmap, as in LLaMA) is supported")
        }
        if let denorm = model.denormalizerSpec, !denorm.precompiledCharsmap.isEmpty {
            throw TokenizerError("the model has a denormalizer with a non-empty precompiled_charsmap, which is not supported")
        }

        // ModelInterface::InitializePieces, with its checks and messages.
        let n = model.pieces.count
        guard n <= Int(Int32.max) else { throw TokenizerError("the model has too many pieces (\(n))") }
        var mergeable = PieceTable(capacity: n)
        var reserved = PieceTable(capacity: 300)
        var userDefined = PrefixMatcher()
        var unk: Int32 = -1
        var byteFound = [Bool](repeating: false, count: 256)
        var hasUnused = false
        for (i, piece) in model.pieces.enumerated() {
            var shown: String { String(decoding: piece.bytes, as: UTF8.self) }  // only for messages
            guard !piece.bytes.isEmpty else { throw TokenizerError("piece \(i) is empty; pieces must not be empty") }
            let isMergeable = piece.type == .normal || piece.type == .userDefined || piece.type == .unused
            let inserted = isMergeable
                ? mergeable.insertIfAbsent(piece.bytes, value: Int32(i))
                : reserved.insertIfAbsent(piece.bytes, value: Int32(i))
            guard inserted else { throw TokenizerError("piece \"\(shown)\" (id \(i)) is already defined") }
            switch piece.type {
            case .userDefined: userDefined.insert(piece.bytes)
            case .unused: hasUnused = true
            case .unknown:
                guard unk < 0 else { throw TokenizerError("unk is already defined (ids \(unk) and \(i))") }
                unk = Int32(i)
            case .byte:
                guard trainer.byteFallback else {
                    throw TokenizerError("byte piece \"\(shown)\" is found although byte_fallback is false")
                }
                guard let value = byteValue(ofPiece: piece.bytes) else {
                    throw TokenizerError("byte piece \"\(shown)\" (id \(i)) is invalid")
                }
                byteFound[Int(value)] = true
            case .normal, .control: break
            }
        }
        guard unk >= 0 else { throw TokenizerError("unk is not defined: the model has no UNKNOWN piece") }
        if trainer.byteFallback && byteFound.contains(false) {
            throw TokenizerError("there are not 256 byte pieces although byte_fallback is true")
        }

        let bpe = BPEModel(mergeable: mergeable, reserved: reserved, scores: model.pieces.map(\.score),
                           types: model.pieces.map(\.type), unkId: unk, userDefined: userDefined,
                           hasUnusedPieces: hasUnused)
        func lookup(_ bytes: [UInt8]) -> Int32 { bytes.withUnsafeBufferPointer { bpe.pieceToId($0) } }
        func controlId(_ piece: [UInt8]) -> Int? {
            let id = Int(lookup(piece))
            return model.pieces[id].type == .control ? id : nil
        }

        self.model = model
        self.vocabSize = n
        self.bpe = bpe
        self.unkId = Int(unk)
        self.bosId = controlId(trainer.bosPiece)
        self.eosId = controlId(trainer.eosPiece)
        self.padId = controlId(trainer.padPiece)
        self.addDummyPrefix = normSpec.addDummyPrefix
        self.removeExtraWhitespaces = normSpec.removeExtraWhitespaces
        self.escapeWhitespaces = normSpec.escapeWhitespaces
        self.treatWhitespaceAsSuffix = trainer.treatWhitespaceAsSuffix
        self.byteFallback = trainer.byteFallback
        self.normalizer = SentencePieceNormalizer(
            addDummyPrefix: normSpec.addDummyPrefix, removeExtraWhitespaces: normSpec.removeExtraWhitespaces,
            escapeWhitespaces: normSpec.escapeWhitespaces, treatWhitespaceAsSuffix: trainer.treatWhitespaceAsSuffix,
            userDefined: userDefined)
        self.byteToId = (0..<256).map { lookup(Array(String(format: "<0x%02X>", $0).utf8)) }
        self.unkSurface = trainer.unkSurface ?? Array(" \u{2047} ".utf8)
        // Decode looks each piece up again by its text (`Decode` calls PieceToId(IdToPiece(id))), so a
        // NORMAL piece that shares its text with a CONTROL piece decodes as the CONTROL one.
        self.decodeKinds = model.pieces.map { piece in
            let id = Int(lookup(piece.bytes))
            switch model.pieces[id].type {
            case .control: return .control
            case .unknown: return .unknown
            case .byte: return .byte(byteValue(ofPiece: piece.bytes) ?? 0)
            case .normal, .userDefined, .unused: return .text
            }
        }

        try runSelfTest()
    }

    // MARK: - Vocabulary

    /// The piece for `id` as stored (`"▁the"`, `"<0x0A>"`), or nil when out of range.
    public func piece(_ id: Int) -> String? {
        guard id >= 0 && id < vocabSize else { return nil }
        return String(decoding: model.pieces[id].bytes, as: UTF8.self)
    }

    /// The score of `id`, or nil when out of range.
    public func score(_ id: Int) -> Float? {
        guard id >= 0 && id < vocabSize else { return nil }
        return model.pieces[id].score
    }

    /// The type of `id`, or nil when out of range.
    public func pieceType(_ id: Int) -> SentencePieceModel.PieceType? {
        guard id >= 0 && id < vocabSize else { return nil }
        return model.pieces[id].type
    }

    /// `sp.piece_to_id(piece)`: the id of `piece`, or `unkId` when it is not in the vocabulary.
    public func pieceToId(_ piece: String) -> Int {
        Int(Array(piece.utf8).withUnsafeBufferPointer { bpe.pieceToId($0) })
    }

    // MARK: - Encode

    /// `sp.encode(text)`: token ids without BOS/EOS.
    public func encode(_ text: String) -> [Int] {
        let normalized = normalizer.normalize(Array(text.utf8))
        var ids: [Int] = []
        ids.reserveCapacity(normalized.count / 2)
        forEachEncodedPiece(normalized) { id, _, mergesIntoPrevious in
            if !mergesIntoPrevious { ids.append(Int(id)) }
        }
        return ids
    }

    /// `sp.encode(text, out_type=str)`: each piece's surface in the normalized text (`"▁the"`),
    /// `<0xNN>` for byte fallback, and a run of unknown characters as one piece.
    public func encodeAsPieces(_ text: String) -> [String] {
        encodePieces(Array(text.utf8)).map { String(decoding: $0, as: UTF8.self) }
    }

    private func encodePieces(_ text: [UInt8]) -> [[UInt8]] {
        let normalized = normalizer.normalize(text)
        var pieces: [[UInt8]] = []
        forEachEncodedPiece(normalized) { id, surface, mergesIntoPrevious in
            let bytes = surface.map { Array(normalized[$0]) } ?? model.pieces[Int(id)].bytes
            if mergesIntoPrevious { pieces[pieces.count - 1] += bytes } else { pieces.append(bytes) }
        }
        return pieces
    }

    /// Runs normalized text through BPE and `PopulateSentencePieceText`'s rules, calling
    /// `emit(id, surface, mergesIntoPrevious)` per piece; `surface` is the piece's range in `normalized`,
    /// or nil for a byte-fallback piece. An unknown segment becomes one `<0xNN>` piece per UTF-8 byte with
    /// byte fallback; without it, an unknown segment right after another one is merged into it (one
    /// `<unk>` id for the run).
    private func forEachEncodedPiece(_ normalized: [UInt8], _ emit: (Int32, Range<Int>?, Bool) -> Void) {
        var previousUnknown = false
        for segment in bpe.encode(normalized) {
            let isUnknown = model.pieces[Int(segment.id)].type == .unknown
            let range = segment.start..<segment.start + segment.length
            if isUnknown && byteFallback {
                for byte in normalized[range] { emit(byteToId[Int(byte)], nil, false) }
            } else {
                emit(segment.id, range, isUnknown && previousUnknown)
            }
            previousUnknown = isUnknown
        }
    }

    // MARK: - Decode

    /// `sp.decode(ids)`. CONTROL ids give no text, `<unk>` gives `" ⁇ "` (unk_surface), runs of byte
    /// pieces are decoded as UTF-8 with one U+FFFD per invalid byte, `▁` becomes a space, and when
    /// `addDummyPrefix` (or `removeExtraWhitespaces`) is set, the leading `▁` of the first piece that
    /// produces text is dropped (all leading `▁` while no text was produced, with
    /// `removeExtraWhitespaces`). Ids outside `0..<vocabSize` are skipped (sentencepiece raises).
    public func decode(_ ids: [Int]) -> String {
        String(decoding: decodeBytes(ids), as: UTF8.self)
    }

    private func decodeBytes(_ ids: [Int]) -> [UInt8] {
        var text: [UInt8] = []
        var pendingBytes: [UInt8] = []
        var isBosWhitespace = true  // still expecting the dummy-prefix `▁` to strip
        var bosWhitespaceSeen = false
        let stripsLeadingSpace = addDummyPrefix || removeExtraWhitespaces
        for id in ids {
            guard id >= 0 && id < vocabSize else { continue }
            let kind = decodeKinds[id]
            if case .byte(let value) = kind {
                pendingBytes.append(value)
                continue
            }
            if !pendingBytes.isEmpty {
                appendDecodingBytes(pendingBytes, to: &text)
                pendingBytes.removeAll(keepingCapacity: true)
            }
            if bosWhitespaceSeen || !text.isEmpty { isBosWhitespace = false }
            switch kind {
            case .control:
                bosWhitespaceSeen = false
            case .unknown:
                text += unkSurface
                bosWhitespaceSeen = false
            case .byte:
                break
            case .text:
                let piece = model.pieces[id].bytes
                var from = 0
                var consumed = false
                if isBosWhitespace && stripsLeadingSpace && piece.starts(with: spaceSymbolUTF8) {
                    from = spaceSymbolUTF8.count
                    // With remove_extra_whitespaces every leading `▁` goes, not just the first one.
                    consumed = !removeExtraWhitespaces
                }
                appendReplacingSpaceSymbol(piece, from: from, to: &text)
                bosWhitespaceSeen = consumed
            }
        }
        if !pendingBytes.isEmpty { appendDecodingBytes(pendingBytes, to: &text) }
        return text
    }

    /// Appends `piece[from...]` with every `▁` (E2 96 81) replaced by a space.
    private func appendReplacingSpaceSymbol(_ piece: [UInt8], from: Int, to out: inout [UInt8]) {
        var i = from
        while i < piece.count {
            if piece[i] == 0xE2 && i + 2 < piece.count && piece[i + 1] == 0x96 && piece[i + 2] == 0x81 {
                out.append(0x20)
                i += 3
            } else {
                out.append(piece[i])
                i += 1
            }
        }
    }

    // MARK: - Self test

    /// SentencePiece checks `self_test_data` when loading: each sample's pieces joined by spaces must
    /// equal the recorded expectation.
    private func runSelfTest() throws {
        var failures = 0
        for sample in model.selfTestSamples {
            let pieces = encodePieces(sample.input)
            let joined = Array(pieces.joined(separator: [0x20]))
            if joined != sample.expected { failures += 1 }
        }
        if failures > 0 {
            throw TokenizerError("self-test failed: \(failures)/\(model.selfTestSamples.count) samples in the model's self_test_data did not encode as recorded")
        }
    }
}

/// `PieceToByte`: the byte value of a `<0xNN>` piece (two uppercase hex digits), or nil.
private func byteValue(ofPiece piece: [UInt8]) -> UInt8? {
    guard piece.count == 6, piece[0] == 0x3C, piece[1] == 0x30, piece[2] == 0x78, piece[5] == 0x3E else { return nil }
    func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        default: return nil
        }
    }
    guard let hi = hex(piece[3]), let lo = hex(piece[4]) else { return nil }
    return hi << 4 | lo
}
