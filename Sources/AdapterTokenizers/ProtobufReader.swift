// A minimal reader for the protocol-buffer wire format (https://protobuf.dev/programming-guides/encoding/),
// enough to parse SentencePiece's ModelProto without a protobuf dependency. Every read is bounds-checked
// and throws on truncation, so hostile or damaged files give an error, never a trap.

/// Wire types of the protobuf encoding; the low three bits of a field's tag.
enum WireType: UInt8 {
    case varint = 0
    case fixed64 = 1
    case lengthDelimited = 2
    case startGroup = 3
    case endGroup = 4
    case fixed32 = 5
}

/// Reads fields from `bytes[position..<end]`. Nested messages are read by a second reader over the
/// sub-range of the same array (no copy).
struct ProtobufReader {
    let bytes: [UInt8]
    private(set) var position: Int
    let end: Int

    /// A reader over the whole buffer.
    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        self.position = 0
        self.end = bytes.count
    }

    /// A reader over `range` of `bytes`.
    init(_ bytes: [UInt8], range: Range<Int>) {
        self.bytes = bytes
        self.position = range.lowerBound
        self.end = range.upperBound
    }

    /// True when every byte of the range has been consumed.
    var isAtEnd: Bool { position >= end }

    /// The next field's number and wire type, or nil at the end of the message.
    mutating func nextField() throws -> (number: Int, wireType: WireType)? {
        if position >= end { return nil }
        let at = position
        let tag = try readVarint()
        guard let wireType = WireType(rawValue: UInt8(tag & 7)) else {
            throw TokenizerError("invalid protobuf: wire type \(tag & 7) at offset \(at)")
        }
        let number = tag >> 3
        guard number >= 1, number <= 536_870_911 else {
            throw TokenizerError("invalid protobuf: field number \(number) at offset \(at)")
        }
        return (Int(number), wireType)
    }

    /// A base-128 varint of at most 10 bytes.
    mutating func readVarint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        let start = position
        while true {
            guard position < end else {
                throw TokenizerError("truncated protobuf: varint at offset \(start) runs past the end")
            }
            let byte = bytes[position]
            position += 1
            if shift < 64 { result |= UInt64(byte & 0x7F) << shift }
            if byte < 0x80 { return result }
            shift += 7
            if shift >= 70 {
                throw TokenizerError("invalid protobuf: varint at offset \(start) is longer than 10 bytes")
            }
        }
    }

    /// A little-endian 32-bit value (wire type 5).
    mutating func readFixed32() throws -> UInt32 {
        guard end - position >= 4 else {
            throw TokenizerError("truncated protobuf: 4-byte field at offset \(position) but \(end - position) bytes remain")
        }
        var value: UInt32 = 0
        for k in 0..<4 { value |= UInt32(bytes[position + k]) << (8 * UInt32(k)) }
        position += 4
        return value
    }

    /// A little-endian 64-bit value (wire type 1).
    mutating func readFixed64() throws -> UInt64 {
        guard end - position >= 8 else {
            throw TokenizerError("truncated protobuf: 8-byte field at offset \(position) but \(end - position) bytes remain")
        }
        var value: UInt64 = 0
        for k in 0..<8 { value |= UInt64(bytes[position + k]) << (8 * UInt64(k)) }
        position += 8
        return value
    }

    /// The byte range of a length-delimited field (wire type 2): a string, bytes or a nested message.
    mutating func readLengthDelimited() throws -> Range<Int> {
        let at = position
        let length = try readVarint()
        guard length <= UInt64(end - position) else {
            throw TokenizerError("truncated protobuf: field at offset \(at) needs \(length) bytes but \(end - position) remain")
        }
        let range = position..<(position + Int(length))
        position = range.upperBound
        return range
    }

    /// The bytes of a length-delimited field.
    mutating func readBytes() throws -> [UInt8] {
        Array(bytes[try readLengthDelimited()])
    }

    /// Skips a field's value, as protobuf parsers do with fields they do not know. Groups (deprecated)
    /// are skipped up to their matching end tag; `depth` bounds nesting so a hostile file cannot
    /// exhaust the stack.
    mutating func skip(_ wireType: WireType, number: Int, depth: Int = 0) throws {
        switch wireType {
        case .varint: _ = try readVarint()
        case .fixed64: _ = try readFixed64()
        case .fixed32: _ = try readFixed32()
        case .lengthDelimited: _ = try readLengthDelimited()
        case .startGroup:
            guard depth < 64 else { throw TokenizerError("invalid protobuf: groups nested too deeply") }
            while true {
                guard let field = try nextField() else {
                    throw TokenizerError("truncated protobuf: group \(number) has no end tag")
                }
                if field.wireType == .endGroup {
                    guard field.number == number else {
                        throw TokenizerError("invalid protobuf: group \(number) closed by end tag \(field.number)")
                    }
                    return
                }
                try skip(field.wireType, number: field.number, depth: depth + 1)
            }
        case .endGroup:
            throw TokenizerError("invalid protobuf: unexpected end-group tag for field \(number)")
        }
    }
}
