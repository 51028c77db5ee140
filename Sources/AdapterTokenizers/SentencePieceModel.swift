// SentencePiece's `ModelProto` (src/sentencepiece_model.proto), read with ProtobufReader. Only the
// fields that change encoding or decoding are kept; every other field is skipped like an unknown one.
// Unset fields take the .proto defaults (model_type UNIGRAM, add_dummy_prefix/remove_extra_whitespaces/
// escape_whitespaces true, unk/bos/eos/pad ids 0/1/2/-1), so flags are always the file's own.

/// The parsed contents of a SentencePiece model file (`tokenizer.model`).
public struct SentencePieceModel: Sendable {
    /// `ModelProto.SentencePiece.Type`.
    public enum PieceType: Int, Sendable {
        /// An ordinary vocabulary piece.
        case normal = 1
        /// The unknown piece (`<unk>`); exactly one per model.
        case unknown = 2
        /// A control symbol (`<s>`, `</s>`): never produced from text, decodes to nothing.
        case control = 3
        /// A user-defined symbol: always matched whole in the input and never merged further.
        case userDefined = 4
        /// A piece the encoder must not emit; it is split back into the two pieces it was merged from.
        case unused = 5
        /// A byte piece `<0xNN>` used by byte fallback.
        case byte = 6
    }

    /// `TrainerSpec.ModelType`.
    public enum ModelType: Int32, Sendable {
        /// Unigram language model (not supported yet).
        case unigram = 1
        /// Byte-pair encoding, as LLaMA uses.
        case bpe = 2
        /// Whitespace-delimited words (not supported).
        case word = 3
        /// Characters (not supported).
        case char = 4
    }

    /// One vocabulary entry (`ModelProto.SentencePiece`).
    public struct Piece: Sendable {
        /// The piece's UTF-8 bytes as stored (the proto does not validate UTF-8).
        public var bytes: [UInt8]
        /// Log-probability-like score; higher merges first in BPE.
        public var score: Float
        /// The piece's type.
        public var type: PieceType
    }

    /// The fields of `TrainerSpec` that matter at inference time.
    public struct TrainerSpec: Sendable {
        /// `model_type` (field 3); UNIGRAM when absent, as in the .proto.
        public var modelType: ModelType = .unigram
        /// `vocab_size` (field 4) as recorded by the trainer.
        public var vocabSize: Int32 = 8000
        /// `treat_whitespace_as_suffix` (field 24): the dummy `▁` goes at the end instead of the start.
        public var treatWhitespaceAsSuffix = false
        /// `byte_fallback` (field 35): unknown characters become `<0xNN>` byte pieces.
        public var byteFallback = false
        /// `unk_id` (field 40).
        public var unkId: Int32 = 0
        /// `bos_id` (field 41).
        public var bosId: Int32 = 1
        /// `eos_id` (field 42).
        public var eosId: Int32 = 2
        /// `pad_id` (field 43); -1 means none.
        public var padId: Int32 = -1
        /// `unk_surface` (field 44): what `<unk>` decodes to when present; `" ⁇ "` otherwise.
        public var unkSurface: [UInt8]? = nil
        /// `unk_piece` (field 45), `"<unk>"` when absent or empty.
        public var unkPiece: [UInt8] = Array("<unk>".utf8)
        /// `bos_piece` (field 46), `"<s>"` when absent or empty.
        public var bosPiece: [UInt8] = Array("<s>".utf8)
        /// `eos_piece` (field 47), `"</s>"` when absent or empty.
        public var eosPiece: [UInt8] = Array("</s>".utf8)
        /// `pad_piece` (field 48), `"<pad>"` when absent or empty.
        public var padPiece: [UInt8] = Array("<pad>".utf8)
    }

    /// The fields of `NormalizerSpec`.
    public struct NormalizerSpec: Sendable {
        /// `name` (field 1), e.g. `"identity"` or `"nmt_nfkc"`.
        public var name = ""
        /// `precompiled_charsmap` (field 2): the normalisation trie; empty for the identity rule.
        public var precompiledCharsmap: [UInt8] = []
        /// `add_dummy_prefix` (field 3): prepend `▁` so the first word looks like every other word.
        public var addDummyPrefix = true
        /// `remove_extra_whitespaces` (field 4): drop leading, trailing and repeated spaces.
        public var removeExtraWhitespaces = true
        /// `escape_whitespaces` (field 5): replace `' '` with `▁` (U+2581).
        public var escapeWhitespaces = true
    }

    /// One `SelfTestData.Sample`: SentencePiece checks these at load time.
    public struct SelfTestSample: Sendable {
        /// The input text's bytes.
        public var input: [UInt8] = []
        /// The expected pieces joined by single spaces.
        public var expected: [UInt8] = []
    }

    /// `pieces` (field 1); the index is the token id.
    public var pieces: [Piece] = []
    /// `trainer_spec` (field 2).
    public var trainerSpec = TrainerSpec()
    /// `normalizer_spec` (field 3).
    public var normalizerSpec = NormalizerSpec()
    /// `self_test_data` (field 4).
    public var selfTestSamples: [SelfTestSample] = []
    /// `denormalizer_spec` (field 5), when present.
    public var denormalizerSpec: NormalizerSpec? = nil

    /// Parses a serialized `ModelProto`. Throws on malformed protobuf; semantic checks (unknown piece,
    /// byte pieces, model type) happen in `SentencePieceTokenizer`.
    public init(data: [UInt8]) throws {
        var reader = ProtobufReader(data)
        while let field = try reader.nextField() {
            switch (field.number, field.wireType) {
            case (1, .lengthDelimited):
                pieces.append(try Self.parsePiece(data, try reader.readLengthDelimited()))
            case (2, .lengthDelimited):
                // A repeated occurrence of a message field merges into the earlier one, as in protobuf.
                try Self.parseTrainerSpec(data, try reader.readLengthDelimited(), into: &trainerSpec)
            case (3, .lengthDelimited):
                try Self.parseNormalizerSpec(data, try reader.readLengthDelimited(), into: &normalizerSpec)
            case (4, .lengthDelimited):
                try Self.parseSelfTestData(data, try reader.readLengthDelimited(), into: &selfTestSamples)
            case (5, .lengthDelimited):
                var spec = denormalizerSpec ?? NormalizerSpec()
                try Self.parseNormalizerSpec(data, try reader.readLengthDelimited(), into: &spec)
                denormalizerSpec = spec
            default:
                // Unknown fields, and known fields with an unexpected wire type, are skipped.
                try reader.skip(field.wireType, number: field.number)
            }
        }
    }

    private static func parsePiece(_ data: [UInt8], _ range: Range<Int>) throws -> Piece {
        var piece = Piece(bytes: [], score: 0, type: .normal)
        var reader = ProtobufReader(data, range: range)
        while let field = try reader.nextField() {
            switch (field.number, field.wireType) {
            case (1, .lengthDelimited): piece.bytes = try reader.readBytes()
            case (2, .fixed32): piece.score = Float(bitPattern: try reader.readFixed32())
            case (3, .varint):
                // proto2 keeps an unknown enum value out of the field (it stays NORMAL or its last value).
                // Enums are int32 on the wire: the low 32 bits count.
                let raw = Int32(truncatingIfNeeded: try reader.readVarint())
                if let type = PieceType(rawValue: Int(raw)) { piece.type = type }
            default: try reader.skip(field.wireType, number: field.number)
            }
        }
        return piece
    }

    private static func parseTrainerSpec(_ data: [UInt8], _ range: Range<Int>, into spec: inout TrainerSpec) throws {
        var reader = ProtobufReader(data, range: range)
        func int32(_ value: UInt64) -> Int32 { Int32(truncatingIfNeeded: value) }
        while let field = try reader.nextField() {
            switch (field.number, field.wireType) {
            case (3, .varint):
                if let type = ModelType(rawValue: int32(try reader.readVarint())) { spec.modelType = type }
            case (4, .varint): spec.vocabSize = int32(try reader.readVarint())
            case (24, .varint): spec.treatWhitespaceAsSuffix = try reader.readVarint() != 0
            case (35, .varint): spec.byteFallback = try reader.readVarint() != 0
            case (40, .varint): spec.unkId = int32(try reader.readVarint())
            case (41, .varint): spec.bosId = int32(try reader.readVarint())
            case (42, .varint): spec.eosId = int32(try reader.readVarint())
            case (43, .varint): spec.padId = int32(try reader.readVarint())
            case (44, .lengthDelimited): spec.unkSurface = try reader.readBytes()
            case (45, .lengthDelimited): spec.unkPiece = nonEmpty(try reader.readBytes(), or: "<unk>")
            case (46, .lengthDelimited): spec.bosPiece = nonEmpty(try reader.readBytes(), or: "<s>")
            case (47, .lengthDelimited): spec.eosPiece = nonEmpty(try reader.readBytes(), or: "</s>")
            case (48, .lengthDelimited): spec.padPiece = nonEmpty(try reader.readBytes(), or: "<pad>")
            default: try reader.skip(field.wireType, number: field.number)
            }
        }
    }

    private static func parseNormalizerSpec(_ data: [UInt8], _ range: Range<Int>, into spec: inout NormalizerSpec) throws {
        var reader = ProtobufReader(data, range: range)
        while let field = try reader.nextField() {
            switch (field.number, field.wireType) {
            case (1, .lengthDelimited): spec.name = String(decoding: try reader.readBytes(), as: UTF8.self)
            case (2, .lengthDelimited): spec.precompiledCharsmap = try reader.readBytes()
            case (3, .varint): spec.addDummyPrefix = try reader.readVarint() != 0
            case (4, .varint): spec.removeExtraWhitespaces = try reader.readVarint() != 0
            case (5, .varint): spec.escapeWhitespaces = try reader.readVarint() != 0
            default: try reader.skip(field.wireType, number: field.number)
            }
        }
    }

    private static func parseSelfTestData(_ data: [UInt8], _ range: Range<Int>, into samples: inout [SelfTestSample]) throws {
        var reader = ProtobufReader(data, range: range)
        while let field = try reader.nextField() {
            guard field.number == 1, field.wireType == .lengthDelimited else {
                try reader.skip(field.wireType, number: field.number)
                continue
            }
            var sample = SelfTestSample()
            var inner = ProtobufReader(data, range: try reader.readLengthDelimited())
            while let f = try inner.nextField() {
                switch (f.number, f.wireType) {
                case (1, .lengthDelimited): sample.input = try inner.readBytes()
                case (2, .lengthDelimited): sample.expected = try inner.readBytes()
                default: try inner.skip(f.wireType, number: f.number)
                }
            }
            samples.append(sample)
        }
    }
}

/// `value`, or `fallback`'s UTF-8 when `value` is empty (SentencePiece's `RETURN_PIECE` rule).
private func nonEmpty(_ value: [UInt8], or fallback: String) -> [UInt8] {
    value.isEmpty ? Array(fallback.utf8) : value
}
