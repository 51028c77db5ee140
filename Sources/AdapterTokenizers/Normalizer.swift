// Stage 1 of encoding: SentencePiece's `Normalizer::Normalize` (src/normalizer.cc) for models whose
// precompiled_charsmap is empty (the identity rule, as in LLaMA). Works on UTF-8 bytes.

/// Turns input text into the string the BPE model segments: optional dummy `▁` prefix (or suffix),
/// spaces escaped to `▁`, extra spaces removed when asked.
struct SentencePieceNormalizer: Sendable {
    /// `NormalizerSpec.add_dummy_prefix`.
    let addDummyPrefix: Bool
    /// `NormalizerSpec.remove_extra_whitespaces`.
    let removeExtraWhitespaces: Bool
    /// `NormalizerSpec.escape_whitespaces`.
    let escapeWhitespaces: Bool
    /// `TrainerSpec.treat_whitespace_as_suffix`: the dummy `▁` is appended instead of prepended.
    let treatWhitespaceAsSuffix: Bool
    /// User-defined symbols are consumed whole, as in SentencePiece (it shares the model's matcher).
    let userDefined: PrefixMatcher

    /// The normalized bytes of `input`. Empty input, or input that is all spaces when
    /// `removeExtraWhitespaces` is set, gives an empty result (no dummy prefix).
    func normalize(_ input: [UInt8]) -> [UInt8] {
        if input.isEmpty { return [] }
        return input.withUnsafeBufferPointer { text in
            // One normalisation unit at `at`: a user-defined symbol, a valid UTF-8 character, or a
            // malformed byte that reads as U+FFFD (one byte consumed).
            func unit(at: Int) -> (range: Range<Int>, replaced: Bool) {
                let match = userDefined.isEmpty ? 0 : userDefined.longestMatch(text, from: at)
                if match > 0 { return (at..<at + match, false) }
                let (valid, length) = decodeUTF8(text, from: at, end: text.count)
                return (at..<at + length, !valid)
            }
            let space: UInt8 = 0x20
            var i = 0
            if removeExtraWhitespaces {
                while i < text.count {
                    let u = unit(at: i)
                    guard !u.replaced, u.range.count == 1, text[i] == space else { break }
                    i = u.range.upperBound
                }
            }
            if i == text.count { return [] }

            var out: [UInt8] = []
            out.reserveCapacity(3 * (text.count - i) + 3)
            func addWhitespace() {
                if escapeWhitespaces { out.append(contentsOf: spaceSymbolUTF8) } else { out.append(space) }
            }
            if !treatWhitespaceAsSuffix && addDummyPrefix { addWhitespace() }

            var isPrevSpace = removeExtraWhitespaces
            while i < text.count {
                let u = unit(at: i)
                if u.replaced {
                    // U+FFFD never starts or ends with a space.
                    out.append(contentsOf: replacementCharacterUTF8)
                    isPrevSpace = false
                } else {
                    var start = u.range.lowerBound
                    if isPrevSpace {
                        while start < u.range.upperBound && text[start] == space { start += 1 }
                    }
                    if start < u.range.upperBound {
                        for k in start..<u.range.upperBound {
                            if escapeWhitespaces && text[k] == space {
                                out.append(contentsOf: spaceSymbolUTF8)
                            } else {
                                out.append(text[k])
                            }
                        }
                        isPrevSpace = text[u.range.upperBound - 1] == space
                    }
                }
                i = u.range.upperBound
                if !removeExtraWhitespaces { isPrevSpace = false }
            }

            if removeExtraWhitespaces {
                // Strips trailing spaces from the normalized text, so a typed `▁` at the end goes too.
                let trailing = escapeWhitespaces ? spaceSymbolUTF8 : [space]
                while out.count >= trailing.count && Array(out[(out.count - trailing.count)...]) == trailing {
                    out.removeLast(trailing.count)
                }
            }
            if treatWhitespaceAsSuffix && addDummyPrefix { addWhitespace() }
            return out
        }
    }
}
