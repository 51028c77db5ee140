// The tokenizer seam: text <-> token ids. SentencePieceTokenizer implements it for LLaMA's
// `tokenizer.model`; other vocabularies (byte-level BPE) plug in behind the same protocol.

/// Turns text into token ids and back.
public protocol Tokenizer {
    /// Token ids for `text`, without BOS or EOS. The empty string gives `[]`.
    func encode(_ text: String) -> [Int]
    /// Text for `ids`. Control tokens (BOS, EOS) produce no text; ids outside the vocabulary are skipped.
    func decode(_ ids: [Int]) -> String
    /// Beginning-of-sequence id, or nil when the vocabulary has none.
    var bosId: Int? { get }
    /// End-of-sequence id, or nil when the vocabulary has none.
    var eosId: Int? { get }
    /// Number of entries in the vocabulary; valid ids are `0..<vocabSize`.
    var vocabSize: Int { get }
    /// The vocabulary entry for `id` as stored (e.g. `"▁the"`, `"<0x0A>"`), or nil when out of range.
    func piece(_ id: Int) -> String?
}

extension Tokenizer {
    /// Token ids for `text` with BOS prepended and/or EOS appended when asked for and defined,
    /// the way the official LLaMA code calls `encode(s, bos=True, eos=False)`.
    public func encode(_ text: String, addBos: Bool, addEos: Bool) -> [Int] {
        var ids: [Int] = []
        if addBos, let bos = bosId { ids.append(bos) }
        ids += encode(text)
        if addEos, let eos = eosId { ids.append(eos) }
        return ids
    }
}

/// Why a tokenizer could not be loaded. `description` is one line a user can act on,
/// e.g. `tokenizer.model: truncated protobuf: field 1 needs 12 bytes at offset 4090 but 6 remain`.
public struct TokenizerError: Error, CustomStringConvertible, Equatable {
    /// The one-line message.
    public let message: String

    /// An error with the given one-line message.
    public init(_ message: String) {
        self.message = message
    }

    /// The one-line message.
    public var description: String { message }
}
