// GGUF files of LLaMA-family models carry SentencePiece vocabularies as plain arrays
// (`tokenizer.ggml.model = "llama"`: tokens, scores, token types). Rather than a second implementation, the
// arrays are written back into a SentencePiece ModelProto and loaded by the one exact implementation.

extension SentencePieceTokenizer {
    /// A SentencePiece BPE tokenizer from vocabulary arrays (GGUF `tokenizer.ggml.tokens`, `.scores`,
    /// `.token_type` with SentencePiece's type numbers). `addDummyPrefix` is GGUF's `add_space_prefix`
    /// (default true, as LLaMA's normaliser); whitespace is escaped and never collapsed, as in LLaMA.
    public convenience init(tokens: [String], scores: [Float]?, types: [Int]?, unkId: Int?, bosId: Int?, eosId: Int?,
                            addDummyPrefix: Bool = true, addsBOS: Bool = true) throws {
        guard !tokens.isEmpty else { throw TokenizerError("the vocabulary is empty") }
        if let scores, scores.count != tokens.count {
            throw TokenizerError("the vocabulary has \(tokens.count) tokens but \(scores.count) scores")
        }
        if let types, types.count != tokens.count {
            throw TokenizerError("the vocabulary has \(tokens.count) tokens but \(types.count) token types")
        }
        var proto = ProtoWriter()
        for (i, t) in tokens.enumerated() {
            var piece = ProtoWriter()
            piece.bytes(1, Array(t.utf8))
            piece.fixed32(2, (scores?[i] ?? 0).bitPattern)
            piece.varint(3, UInt64(types?[i] ?? 1))
            proto.bytes(1, piece.data)
        }
        var trainer = ProtoWriter()
        trainer.varint(3, 2)  // model_type = BPE
        trainer.varint(4, UInt64(tokens.count))
        trainer.varint(35, (types ?? []).contains(6) ? 1 : 0)  // byte_fallback when byte pieces exist
        func signed(_ v: Int) -> UInt64 { UInt64(bitPattern: Int64(v)) }
        trainer.varint(40, signed(unkId ?? 0))
        trainer.varint(41, signed(bosId ?? -1))
        trainer.varint(42, signed(eosId ?? -1))
        trainer.varint(43, signed(-1))
        // bos_id()/eos_id() resolve through the piece strings, so name them after the given ids.
        if let bosId, bosId >= 0, bosId < tokens.count { trainer.bytes(46, Array(tokens[bosId].utf8)) }
        if let eosId, eosId >= 0, eosId < tokens.count { trainer.bytes(47, Array(tokens[eosId].utf8)) }
        if let unkId, unkId >= 0, unkId < tokens.count { trainer.bytes(45, Array(tokens[unkId].utf8)) }
        proto.bytes(2, trainer.data)
        var normalizer = ProtoWriter()
        normalizer.bytes(1, Array("identity".utf8))
        normalizer.varint(3, addDummyPrefix ? 1 : 0)
        normalizer.varint(4, 0)
        normalizer.varint(5, 1)
        proto.bytes(3, normalizer.data)
        try self.init(data: proto.data, addsBOS: addsBOS)
    }
}

/// Minimal protobuf wire-format writer (varint, fixed32, length-delimited), the counterpart of ProtobufReader.
struct ProtoWriter {
    private(set) var data: [UInt8] = []

    private mutating func rawVarint(_ v: UInt64) {
        var v = v
        while v >= 0x80 { data.append(UInt8(v & 0x7f) | 0x80); v >>= 7 }
        data.append(UInt8(v))
    }

    mutating func varint(_ field: Int, _ v: UInt64) {
        rawVarint(UInt64(field << 3))
        rawVarint(v)
    }

    mutating func fixed32(_ field: Int, _ v: UInt32) {
        rawVarint(UInt64(field << 3 | 5))
        for i in 0..<4 { data.append(UInt8((v >> (8 * UInt32(i))) & 0xff)) }
    }

    mutating func bytes(_ field: Int, _ b: [UInt8]) {
        rawVarint(UInt64(field << 3 | 2))
        rawVarint(UInt64(b.count))
        data += b
    }
}
