// The tokenizer seam: text <-> token ids. SentencePieceTokenizer implements it for LLaMA's
// `tokenizer.model`; other vocabularies (byte-level BPE) plug in behind the same protocol.

/// Turns text into token ids and back, and carries the model's rules around them: whether prompts start
/// with BOS, which ids end generation, and whether special-token text in a prompt is parsed.
public protocol Tokenizer: Sendable {
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
    /// Whether prompts start with BOS for this model (LLaMA: yes; SmolLM2's GGUF says `add_bos_token` false).
    var addsBOS: Bool { get }
    /// Ids that end generation: EOS plus end-of-turn tokens such as `<|im_end|>`.
    var stopIds: Set<Int> { get }
    /// Whether special-token text written in a prompt (`<|im_start|>`) becomes the special token (byte-level
    /// BPE, as llama.cpp) or stays plain text (SentencePiece, as the official LLaMA code).
    var parsesSpecialTokens: Bool { get }
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

    /// Prompt ids for already-formatted text, with BOS when the model wants it (`addsBOS`).
    public func encodePrompt(_ text: String) -> [Int] { encode(text, addBos: addsBOS, addEos: false) }

    /// BOS as text, for chat templates that print `bos_token` ("" when there is none).
    public var bosText: String { bosId.flatMap { piece($0) } ?? "" }

    /// EOS as a chat template should print it: its text where the tokenizer parses special tokens, else ""
    /// (SentencePiece would turn a written "</s>" into stray pieces, never into EOS).
    public var templateEOSText: String { parsesSpecialTokens ? (eosId.flatMap { piece($0) } ?? "") : "" }
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
