// Stage 1 of byte-level BPE encoding: splitting text into words before BPE, as Hugging Face `tokenizers`
// pre-tokenizers and llama.cpp's `unicode_regex_split` do. The GPT-2, Llama-3 and Qwen2 regexes are
// matched by hand over Unicode scalars (no regex engine in the hot path); each matcher below walks the
// regex's alternatives in order at every position, which is what a backtracking engine does for these
// patterns, so the splits are the same, piece for piece (checked against `pre_tokenize_str` by
// Tests/Fixtures/bpe/tiny_cases.json).

/// How text is cut into words before BPE: a list of stages, each of which splits every piece the previous
/// stage produced, keeping both the matched parts and the text between matches ("Isolated" in
/// Hugging Face terms). Pieces never overlap and their concatenation is the input.
///
/// Character classes follow the regexes: `\p{L}` = general category L*, `\p{N}` = N* (Nd, Nl, No),
/// `\s` = the Unicode White_Space property (so U+0085, U+00A0, U+3000 are spaces; U+200B, U+FEFF and
/// the ASCII separators U+001C-U+001F are not), `\p{P}` = P*. They come from `Unicode.Scalar.Properties`,
/// so characters assigned in a newer Unicode version than the reference's may classify differently.
public struct PreTokenizer: Sendable, Equatable {
    /// One splitting step.
    public enum Stage: Sendable, Equatable {
        /// Hugging Face `Digits`: every `\p{N}` character on its own (`individual`), or runs of them.
        /// llama.cpp's `"\\p{N}"` regex (SmolLM, StarCoder) is the individual form.
        case digits(individual: Bool)
        /// GPT-2's regex, `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
        /// as in Hugging Face `ByteLevel(use_regex=true)`.
        case gpt2
        /// Llama-3's regex, `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
        /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`, with `\p{N}{1,maxDigits}`: 3 for Llama-3,
        /// 1 for Qwen2. The contractions are case-insensitive with Unicode simple case folding, as in
        /// Oniguruma, so `'ſ` (U+017F folds to `s`) is a contraction too.
        case llama3(maxDigits: Int)
        /// llama.cpp's default `[\p{P}\$\+<=>\^~\|]+`: runs of punctuation and those ASCII symbols.
        case punctuationRuns
        /// `\p{N}+`: runs of numbers.
        case numberRuns
        /// `[0-9][0-9][0-9]`: ASCII digit triples, left to right.
        case asciiDigitTriples
    }

    /// The stages, applied in order.
    public let stages: [Stage]

    /// A pre-tokenizer with the given stages.
    public init(stages: [Stage]) {
        self.stages = stages
    }

    /// The pre-tokenizer llama.cpp uses for a GGUF `tokenizer.ggml.pre` value (src/llama-vocab.cpp,
    /// `llm_tokenizer_bpe`), and whether that name sets llama.cpp's `ignore_merges` (a word that is a
    /// token as a whole is emitted without merging, as Hugging Face's BPE `ignore_merges`).
    ///
    /// | names | stages |
    /// |---|---|
    /// | `gpt2`, `gpt-2`, `phi-2`, `mpt`, `olmo`, `jais`, `roberta-bpe` | GPT-2 regex |
    /// | `smollm`, `starcoder`, `refact`, `command-r`, `codeshell`, `exaone`, `minerva-7b` | each digit alone, then GPT-2 |
    /// | `llama3`, `llama-v3`, `llama-bpe`, `falcon3`, `pixtral` (ignore_merges); `dbrx`, `smaug-bpe`, `chatglm-bpe`, `glm4` | Llama-3 regex |
    /// | `qwen2`, `deepseek-r1-qwen`, `stablelm2`, `hunyuan`, `megrez` | Llama-3 regex with single digits |
    /// | `default` or empty | punctuation runs, GPT-2, number runs, ASCII digit triples |
    public static func llamaCpp(name: String) throws -> (preTokenizer: PreTokenizer, ignoreMerges: Bool) {
        switch name {
        case "gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais", "roberta-bpe":
            return (PreTokenizer(stages: [.gpt2]), false)
        case "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b":
            return (PreTokenizer(stages: [.digits(individual: true), .gpt2]), false)
        case "llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral":
            return (PreTokenizer(stages: [.llama3(maxDigits: 3)]), true)
        case "dbrx", "smaug-bpe", "chatglm-bpe", "glm4":
            return (PreTokenizer(stages: [.llama3(maxDigits: 3)]), false)
        case "qwen2", "deepseek-r1-qwen", "stablelm2", "hunyuan", "megrez":
            return (PreTokenizer(stages: [.llama3(maxDigits: 1)]), false)
        case "default", "":
            return (PreTokenizer(stages: [.punctuationRuns, .gpt2, .numberRuns, .asciiDigitTriples]), false)
        default:
            throw TokenizerError("unsupported pre-tokenizer \"\(name)\" (tokenizer.ggml.pre); supported: smollm, gpt2, llama-bpe/llama3, qwen2, default and their aliases")
        }
    }

    /// The words of `text`, as strings (for inspection and tests; the tokenizer works on offsets).
    public func split(_ text: String) -> [String] {
        let bytes = Array(text.utf8)
        var scalars = ScalarText()
        scalars.load(bytes[...])
        var pieces: [Range<Int>] = []
        var scratch: [Range<Int>] = []
        split(scalars, into: &pieces, scratch: &scratch)
        return pieces.map { String(decoding: bytes[scalars.byteRange($0)], as: UTF8.self) }
    }

    /// Splits `text` into pieces (scalar index ranges). `pieces` and `scratch` are reused buffers.
    ///
    /// Cost: O(stages × scalars); every stage looks at each scalar a bounded number of times (the
    /// whitespace alternatives may scan a run of spaces twice).
    func split(_ text: ScalarText, into pieces: inout [Range<Int>], scratch: inout [Range<Int>]) {
        pieces.removeAll(keepingCapacity: true)
        if text.count == 0 { return }
        pieces.append(0..<text.count)
        for stage in stages {
            swap(&pieces, &scratch)
            pieces.removeAll(keepingCapacity: true)
            text.classes.withUnsafeBufferPointer { classes in
                text.scalars.withUnsafeBufferPointer { scalars in
                    for range in scratch {
                        switch stage {
                        case .digits(let individual):
                            splitDigits(classes, range, individual: individual, into: &pieces)
                        case .gpt2:
                            splitGPT2(scalars, classes, range, into: &pieces)
                        case .llama3(let maxDigits):
                            splitLlama3(scalars, classes, range, maxDigits: maxDigits, into: &pieces)
                        case .punctuationRuns:
                            isolateRuns(classes, range, of: ScalarClass.punctuationOrSymbol, into: &pieces)
                        case .numberRuns:
                            isolateRuns(classes, range, of: ScalarClass.number, into: &pieces)
                        case .asciiDigitTriples:
                            splitDigitTriples(scalars, range, into: &pieces)
                        }
                    }
                }
            }
        }
    }
}

// MARK: - Character classes

/// Bit flags of a scalar, computed once per scalar before splitting.
enum ScalarClass {
    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let whitespace: UInt8 = 4
    static let punctuation: UInt8 = 8
    /// One of `$ + < = > ^ ~ |`, which llama.cpp's default pre-tokenizer groups with punctuation.
    static let defaultSymbol: UInt8 = 16
    static let punctuationOrSymbol: UInt8 = punctuation | defaultSymbol
    /// What `[^\s\p{L}\p{N}]` excludes.
    static let word: UInt8 = letter | number | whitespace

    /// The flags of one scalar. ASCII is decided by a switch; everything else by its general category
    /// and White_Space property.
    @inline(__always)
    static func of(_ value: UInt32) -> UInt8 {
        if value < 0x80 {
            switch value {
            case 0x41...0x5A, 0x61...0x7A: return letter
            case 0x30...0x39: return number
            case 0x09...0x0D, 0x20: return whitespace
            case 0x21...0x23, 0x25...0x2A, 0x2C...0x2F, 0x3A, 0x3B, 0x3F, 0x40, 0x5B...0x5D, 0x5F, 0x7B, 0x7D:
                return punctuation
            case 0x24, 0x2B, 0x3C...0x3E, 0x5E, 0x7C, 0x7E: return defaultSymbol
            default: return 0  // C0 controls (including U+001C-U+001F, which are not White_Space), `, DEL
            }
        }
        guard let scalar = Unicode.Scalar(value) else { return 0 }
        let properties = scalar.properties
        var flags: UInt8 = 0
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            flags = letter
        case .decimalNumber, .letterNumber, .otherNumber:
            flags = number
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            flags = punctuation
        default:
            break
        }
        if properties.isWhitespace { flags |= whitespace }
        return flags
    }
}

/// A piece of UTF-8 text as scalars, their classes, and the byte offset of each scalar, so that a range
/// of scalars maps back to a range of the original bytes without re-encoding.
struct ScalarText {
    var scalars: [UInt32] = []
    var classes: [UInt8] = []
    /// `count + 1` offsets into the bytes the text was loaded from; the last one is the end.
    var offsets: [Int] = []

    var count: Int { scalars.count }

    /// Decodes valid UTF-8 (a Swift string's bytes), replacing what was loaded before.
    mutating func load(_ bytes: ArraySlice<UInt8>) {
        scalars.removeAll(keepingCapacity: true)
        classes.removeAll(keepingCapacity: true)
        offsets.removeAll(keepingCapacity: true)
        scalars.reserveCapacity(bytes.count)
        classes.reserveCapacity(bytes.count)
        offsets.reserveCapacity(bytes.count + 1)
        var i = bytes.startIndex
        let end = bytes.endIndex
        while i < end {
            let b0 = UInt32(bytes[i])
            var value: UInt32
            var length: Int
            if b0 < 0x80 {
                value = b0; length = 1
            } else if b0 < 0xE0 {
                value = b0 & 0x1F; length = 2
            } else if b0 < 0xF0 {
                value = b0 & 0x0F; length = 3
            } else {
                value = b0 & 0x07; length = 4
            }
            length = min(length, end - i)
            for k in 1..<max(length, 1) { value = value << 6 | (UInt32(bytes[i + k]) & 0x3F) }
            offsets.append(i - bytes.startIndex)
            scalars.append(value)
            classes.append(ScalarClass.of(value))
            i += length
        }
        offsets.append(end - bytes.startIndex)
    }

    /// The bytes (relative to the loaded slice's start) of a range of scalars.
    @inline(__always)
    func byteRange(_ range: Range<Int>) -> Range<Int> {
        offsets[range.lowerBound]..<offsets[range.upperBound]
    }
}

// MARK: - Matchers

private let apostrophe: UInt32 = 0x27
private let space: UInt32 = 0x20
private let carriageReturn: UInt32 = 0x0D
private let lineFeed: UInt32 = 0x0A

@inline(__always)
private func emit(_ start: Int, _ end: Int, into pieces: inout [Range<Int>]) {
    if end > start { pieces.append(start..<end) }
}

/// Length of the contraction (`'s 't 're 've 'm 'll 'd`) at `i`, or 0. Case-insensitive matching uses
/// simple case folding: ASCII upper case, and U+017F LATIN SMALL LETTER LONG S for `s`.
@inline(__always)
private func contractionLength(_ s: UnsafeBufferPointer<UInt32>, _ i: Int, _ end: Int, caseInsensitive: Bool) -> Int {
    guard s[i] == apostrophe, i + 1 < end else { return 0 }
    @inline(__always) func fold(_ c: UInt32) -> UInt32 {
        guard caseInsensitive else { return c }
        if c >= 0x41 && c <= 0x5A { return c + 0x20 }
        if c == 0x17F { return 0x73 }
        return c
    }
    let c1 = fold(s[i + 1])
    switch c1 {
    case 0x73, 0x74, 0x6D, 0x64: return 2  // s t m d
    default: break
    }
    guard i + 2 < end else { return 0 }
    let c2 = fold(s[i + 2])
    if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) { return 3 }  // re ve ll
    return 0
}

/// `\s+(?!\S)|\s+` at `i`, which is whitespace: the whole run when it reaches the end of the piece, else
/// all but its last character (which then belongs to the next word), or the single character.
@inline(__always)
private func whitespaceEnd(_ k: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> Int {
    var n = i
    while n < end && k[n] & ScalarClass.whitespace != 0 { n += 1 }
    if n == end || n - i == 1 { return n }
    return n - 1
}

/// GPT-2's regex over `range`.
private func splitGPT2(_ s: UnsafeBufferPointer<UInt32>, _ k: UnsafeBufferPointer<UInt8>, _ range: Range<Int>,
                       into pieces: inout [Range<Int>]) {
    let end = range.upperBound
    var i = range.lowerBound
    while i < end {
        var j: Int
        let contraction = contractionLength(s, i, end, caseInsensitive: false)
        if contraction > 0 {
            j = i + contraction
        } else {
            // ` ?X+`: an optional leading U+0020, then a run of one class.
            let start = (s[i] == space && i + 1 < end) ? i + 1 : i
            let kind = k[start]
            if kind & ScalarClass.letter != 0 {
                j = start + 1
                while j < end && k[j] & ScalarClass.letter != 0 { j += 1 }
            } else if kind & ScalarClass.number != 0 {
                j = start + 1
                while j < end && k[j] & ScalarClass.number != 0 { j += 1 }
            } else if kind & ScalarClass.word == 0 {
                j = start + 1
                while j < end && k[j] & ScalarClass.word == 0 { j += 1 }
            } else {
                j = whitespaceEnd(k, i, end)
            }
        }
        emit(i, j, into: &pieces)
        i = j
    }
}

/// Llama-3's (and, with `maxDigits` 1, Qwen2's) regex over `range`.
private func splitLlama3(_ s: UnsafeBufferPointer<UInt32>, _ k: UnsafeBufferPointer<UInt8>, _ range: Range<Int>,
                         maxDigits: Int, into pieces: inout [Range<Int>]) {
    let end = range.upperBound
    var i = range.lowerBound
    while i < end {
        var j: Int
        let c = s[i], kind = k[i]
        let contraction = contractionLength(s, i, end, caseInsensitive: true)
        if contraction > 0 {
            j = i + contraction
        } else if kind & ScalarClass.letter != 0 {
            // [^\r\n\p{L}\p{N}]?\p{L}+ without the optional character.
            j = i + 1
            while j < end && k[j] & ScalarClass.letter != 0 { j += 1 }
        } else if c != carriageReturn && c != lineFeed && kind & ScalarClass.number == 0
                    && i + 1 < end && k[i + 1] & ScalarClass.letter != 0 {
            // [^\r\n\p{L}\p{N}]?\p{L}+ with it: any space, punctuation or symbol glues to the letters.
            j = i + 2
            while j < end && k[j] & ScalarClass.letter != 0 { j += 1 }
        } else if kind & ScalarClass.number != 0 {
            j = i + 1
            while j < end && j - i < maxDigits && k[j] & ScalarClass.number != 0 { j += 1 }
        } else {
            let start = (c == space && i + 1 < end) ? i + 1 : i
            if k[start] & ScalarClass.word == 0 {
                // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
                j = start + 1
                while j < end && k[j] & ScalarClass.word == 0 { j += 1 }
                while j < end && (s[j] == carriageReturn || s[j] == lineFeed) { j += 1 }
            } else {
                // `\s*[\r\n]+`: through the last line break of the whitespace run, if it has one.
                var n = i
                var lastBreak = -1
                while n < end && k[n] & ScalarClass.whitespace != 0 {
                    if s[n] == carriageReturn || s[n] == lineFeed { lastBreak = n }
                    n += 1
                }
                j = lastBreak >= 0 ? lastBreak + 1 : whitespaceEnd(k, i, end)
            }
        }
        emit(i, j, into: &pieces)
        i = j
    }
}

/// Hugging Face `Digits`: numbers isolated, one by one or as runs.
private func splitDigits(_ k: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, individual: Bool,
                         into pieces: inout [Range<Int>]) {
    if individual {
        var start = range.lowerBound
        for i in range where k[i] & ScalarClass.number != 0 {
            emit(start, i, into: &pieces)
            pieces.append(i..<i + 1)
            start = i + 1
        }
        emit(start, range.upperBound, into: &pieces)
    } else {
        isolateRuns(k, range, of: ScalarClass.number, into: &pieces)
    }
}

/// Runs of scalars having any of `flags` become pieces, and so does the text between them.
private func isolateRuns(_ k: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, of flags: UInt8,
                         into pieces: inout [Range<Int>]) {
    var i = range.lowerBound
    let end = range.upperBound
    while i < end {
        let inRun = k[i] & flags != 0
        var j = i + 1
        while j < end && (k[j] & flags != 0) == inRun { j += 1 }
        pieces.append(i..<j)
        i = j
    }
}

/// `[0-9][0-9][0-9]` matches, left to right without overlap, and the text between them.
private func splitDigitTriples(_ s: UnsafeBufferPointer<UInt32>, _ range: Range<Int>, into pieces: inout [Range<Int>]) {
    @inline(__always) func isDigit(_ c: UInt32) -> Bool { c >= 0x30 && c <= 0x39 }
    var start = range.lowerBound
    var i = range.lowerBound
    let end = range.upperBound
    while i + 3 <= end {
        if isDigit(s[i]) && isDigit(s[i + 1]) && isDigit(s[i + 2]) {
            emit(start, i, into: &pieces)
            pieces.append(i..<i + 3)
            i += 3
            start = i
        } else {
            i += 1
        }
    }
    emit(start, end, into: &pieces)
}
