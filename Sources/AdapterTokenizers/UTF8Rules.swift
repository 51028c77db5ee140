// SentencePiece's own UTF-8 rules (src/util.h, src/util.cc). They differ from Swift's decoder in one
// way that shows in decoded text: an invalid sequence is replaced byte by byte (each byte that does
// not start a valid character becomes one U+FFFD), not per maximal subpart. So the truncated
// `E2 96` decodes to two U+FFFD here, where `String(decoding:as:)` gives one.

/// `string_util::OneCharLen`: a character's length judged by its lead byte alone
/// (00-BF: 1, C0-DF: 2, E0-EF: 3, F0-FF: 4).
@inline(__always)
func utf8CharLength(leadByte: UInt8) -> Int {
    switch leadByte >> 4 {
    case 0xC, 0xD: return 2
    case 0xE: return 3
    case 0xF: return 4
    default: return 1
    }
}

/// `string_util::IsValidDecodeUTF8`: whether `bytes[from..<end]` starts with a valid character, and
/// how many bytes it has (1 when invalid). Overlong forms, surrogates and code points above U+10FFFF
/// are invalid.
@inline(__always)
func decodeUTF8(_ bytes: UnsafeBufferPointer<UInt8>, from: Int, end: Int) -> (valid: Bool, length: Int) {
    let remaining = end - from
    let b0 = UInt32(bytes[from])
    @inline(__always) func isTrail(_ b: UInt32) -> Bool { b & 0xC0 == 0x80 }
    @inline(__always) func isValidCodepoint(_ c: UInt32) -> Bool { c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF) }
    if b0 < 0x80 { return (true, 1) }
    if remaining >= 2 && b0 & 0xE0 == 0xC0 {
        let b1 = UInt32(bytes[from + 1])
        let cp = (b0 & 0x1F) << 6 | (b1 & 0x3F)
        if isTrail(b1) && cp >= 0x80 && isValidCodepoint(cp) { return (true, 2) }
    } else if remaining >= 3 && b0 & 0xF0 == 0xE0 {
        let b1 = UInt32(bytes[from + 1]), b2 = UInt32(bytes[from + 2])
        let cp = (b0 & 0x0F) << 12 | (b1 & 0x3F) << 6 | (b2 & 0x3F)
        if isTrail(b1) && isTrail(b2) && cp >= 0x800 && isValidCodepoint(cp) { return (true, 3) }
    } else if remaining >= 4 && b0 & 0xF8 == 0xF0 {
        let b1 = UInt32(bytes[from + 1]), b2 = UInt32(bytes[from + 2]), b3 = UInt32(bytes[from + 3])
        let cp = (b0 & 0x07) << 18 | (b1 & 0x3F) << 12 | (b2 & 0x3F) << 6 | (b3 & 0x3F)
        if isTrail(b1) && isTrail(b2) && isTrail(b3) && cp >= 0x10000 && isValidCodepoint(cp) { return (true, 4) }
    }
    return (false, 1)
}

/// U+FFFD REPLACEMENT CHARACTER in UTF-8.
let replacementCharacterUTF8: [UInt8] = [0xEF, 0xBF, 0xBD]

/// U+2581 LOWER ONE EIGHTH BLOCK (`▁`), SentencePiece's visible space, in UTF-8.
let spaceSymbolUTF8: [UInt8] = [0xE2, 0x96, 0x81]

/// Appends `bytes` to `out`, decoding them as SentencePiece's `ProcessBytePieces` does: valid
/// characters are copied, and every byte at which no valid character starts becomes one U+FFFD.
func appendDecodingBytes(_ bytes: [UInt8], to out: inout [UInt8]) {
    bytes.withUnsafeBufferPointer { buf in
        var offset = 0
        while offset < buf.count {
            let (valid, length) = decodeUTF8(buf, from: offset, end: buf.count)
            if valid {
                out.append(contentsOf: buf[offset..<offset + length])
            } else {
                out.append(contentsOf: replacementCharacterUTF8)
            }
            offset += length
        }
    }
}
