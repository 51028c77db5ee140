import AdapterCore

/// A bounds-checked little-endian cursor over bytes that come from an untrusted file.
/// Every read checks the remaining length first, so corrupt input throws instead of trapping.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    var position: Int
    /// Prefix for error messages (file and part being read).
    let context: String

    init(_ bytes: UnsafeRawBufferPointer, position: Int = 0, context: String) {
        self.bytes = bytes
        self.position = position
        self.context = context
    }

    var remaining: Int { bytes.count - position }
    var atEnd: Bool { position >= bytes.count }

    func truncated(_ what: String) -> AdapterError {
        .format("\(context): truncated or corrupt (\(what) runs past the end at byte \(position))")
    }

    mutating func skip(_ n: Int, _ what: String = "data") throws {
        guard n >= 0, n <= remaining else { throw truncated(what) }
        position += n
    }

    mutating func u8(_ what: String = "byte") throws -> UInt8 {
        guard remaining >= 1 else { throw truncated(what) }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func u16(_ what: String = "field") throws -> UInt16 {
        guard remaining >= 2 else { throw truncated(what) }
        defer { position += 2 }
        return UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: UInt16.self))
    }

    mutating func u32(_ what: String = "field") throws -> UInt32 {
        guard remaining >= 4 else { throw truncated(what) }
        defer { position += 4 }
        return UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: UInt32.self))
    }

    mutating func u64(_ what: String = "field") throws -> UInt64 {
        guard remaining >= 8 else { throw truncated(what) }
        defer { position += 8 }
        return UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: UInt64.self))
    }

    /// A slice of `n` bytes (no copy), advancing past it.
    mutating func slice(_ n: Int, _ what: String = "data") throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= remaining else { throw truncated(what) }
        defer { position += n }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + n)])
    }

    /// Bytes up to (not including) the next `\n`, advancing past the newline.
    mutating func line(_ what: String = "text line") throws -> UnsafeRawBufferPointer {
        var end = position
        while end < bytes.count, bytes[end] != 0x0A { end += 1 }
        guard end < bytes.count else { throw truncated(what) }
        defer { position = end + 1 }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<end])
    }
}

extension UInt64 {
    /// The value as an Int when it fits, so sizes from a file never trap on conversion.
    var checkedInt: Int? { self <= UInt64(Int.max) ? Int(self) : nil }
}

/// `s` made safe for a one-line error message: control characters escaped, long text shortened.
/// Names in messages come from the file itself and may contain anything.
func printable(_ s: String, limit: Int = 120) -> String {
    var out = ""
    for scalar in s.unicodeScalars {
        if out.unicodeScalars.count >= limit { out += "…"; break }
        if scalar.value < 0x20 || scalar.value == 0x7F || (0x80..<0xA0).contains(scalar.value) {
            out += "\\u{\(String(scalar.value, radix: 16))}"
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    return out
}
