// Streaming detokenization for generation loops: text is emitted as soon as it is final.

/// Turns token ids, fed one at a time, into text chunks whose concatenation equals
/// `tokenizer.decode(allIds)`.
///
/// Decoding token by token is wrong for SentencePiece: a lone `"▁Paris"` decodes to `"Paris"` (the
/// dummy-prefix space is dropped from the first piece), and a character split over byte pieces decodes
/// to U+FFFD until its last byte arrives. So each step decodes a short window of recent ids twice, up to
/// the last emitted position and up to the new id, and emits the difference; the window starts at a
/// token whose text was already emitted, so the first-piece rule applies to both decodes alike. Output
/// is held back while the decoded text ends in U+FFFD (an incomplete UTF-8 sequence that may still
/// complete). This is the prefix-diff scheme of Hugging Face's text-generation-inference; the window
/// keeps each step O(window) instead of O(sequence).
public struct StreamingDecoder {
    /// The tokenizer that decodes.
    public let tokenizer: any Tokenizer
    /// Every id fed so far, after `context`.
    public private(set) var ids: [Int]
    /// Start of the decode window.
    private var prefixOffset: Int
    /// End of the ids whose text has been emitted.
    private var readOffset: Int

    /// A decoder for a fresh stream. `context` are ids whose text the reader has already seen (for
    /// example the last few prompt tokens): the first emitted chunk then keeps its leading space, as it
    /// would in a decode of context + generated ids. With no context the stream decodes exactly like
    /// `tokenizer.decode(generatedIds)`.
    public init(tokenizer: any Tokenizer, context: [Int] = []) {
        self.tokenizer = tokenizer
        self.ids = context
        self.prefixOffset = 0
        self.readOffset = context.count
    }

    /// Feeds one id; returns the text that became final (often empty while a character is incomplete
    /// or for control tokens).
    public mutating func add(_ id: Int) -> String {
        ids.append(id)
        return emit(force: false)
    }

    /// Returns whatever is still held back (e.g. U+FFFD for an unfinished byte sequence) at the end of
    /// the stream.
    public mutating func finish() -> String {
        emit(force: true)
    }

    private mutating func emit(force: Bool) -> String {
        let before = Array(tokenizer.decode(Array(ids[prefixOffset..<readOffset])).utf8)
        let after = Array(tokenizer.decode(Array(ids[prefixOffset...])).utf8)
        guard after.count > before.count else { return "" }
        if !force && after.suffix(3).elementsEqual([0xEF, 0xBF, 0xBD]) { return "" }
        // `after` extends `before` for SentencePiece; if a tokenizer ever rewrote earlier text, emit
        // what follows the common part, starting on a character boundary.
        var common = 0
        while common < before.count && before[common] == after[common] { common += 1 }
        while common > 0 && common < after.count && after[common] & 0xC0 == 0x80 { common -= 1 }
        let chunk = String(decoding: after[common...], as: UTF8.self)
        // The next window starts at the first id not yet emitted, unless those ids decode to nothing on
        // their own (e.g. a lone `▁`, or only control tokens): then a later piece could be mistaken for
        // the first one, so the window keeps its start.
        if !tokenizer.decode(Array(ids[readOffset...])).isEmpty {
            prefixOffset = readOffset
        }
        readOffset = ids.count
        return chunk
    }
}
