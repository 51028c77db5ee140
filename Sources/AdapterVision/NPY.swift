import AdapterCore
import AdapterFormats
import Foundation

/// NumPy `.npy` files (format documented in numpy/lib/format.py): writing float32 arrays, which is
/// what `preprocess --out` produces, and reading the small arrays the tests compare against.
public enum NPY {
    /// An array read from a `.npy` file: its shape, its dtype descriptor and its raw little-endian
    /// C-order bytes.
    public struct Contents: Sendable {
        /// Dimensions, outermost first.
        public var shape: [Int]
        /// NumPy dtype string as stored, e.g. `<f4` or `|u1`.
        public var descr: String
        /// Element bytes in C order.
        public var data: [UInt8]

        /// Element count.
        public var count: Int { shape.reduce(1, *) }

        /// The elements as Float; supports `<f4`, `<f8`, `|u1` and `<i4`.
        public func floats() throws -> [Float] {
            switch descr {
            case "<f4":
                return data.withUnsafeBytes { raw in (0..<count).map { Float(bitPattern: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self).littleEndian) } }
            case "<f8":
                return data.withUnsafeBytes { raw in (0..<count).map { Float(Double(bitPattern: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self).littleEndian)) } }
            case "|u1", "<u1":
                return data.map { Float($0) }
            case "<i4":
                return data.withUnsafeBytes { raw in (0..<count).map { Float(Int32(bitPattern: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self).littleEndian)) } }
            default:
                throw AdapterError.unsupported("npy dtype \(descr) cannot be read as float")
            }
        }

        /// The elements as bytes; only for `|u1`.
        public func bytes() throws -> [UInt8] {
            guard descr == "|u1" || descr == "<u1" else { throw AdapterError.unsupported("npy dtype \(descr) is not uint8") }
            return data
        }
    }

    /// The header dictionary NumPy writes, padded with spaces and a newline so that the data starts
    /// at a multiple of 64 bytes (NumPy's ARRAY_ALIGN; version 1.0 only requires 16).
    static func header(descr: String, shape: [Int]) -> [UInt8] {
        let dims: String
        switch shape.count {
        case 0: dims = "()"
        case 1: dims = "(\(shape[0]),)"
        default: dims = "(" + shape.map(String.init).joined(separator: ", ") + ")"
        }
        var dict = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(dims), }"
        let unpadded = 10 + dict.utf8.count + 1
        dict += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0]
        let length = UInt16(dict.utf8.count)
        out += [UInt8(length & 0xFF), UInt8(length >> 8)]
        out += Array(dict.utf8)
        return out
    }

    /// Writes `values` as a little-endian float32 C-order array of `shape` (format version 1.0).
    public static func write(_ values: UnsafeBufferPointer<Float>, shape: [Int], to path: String) throws {
        guard shape.reduce(1, *) == values.count, shape.allSatisfy({ $0 >= 0 }) else {
            throw AdapterError.shape("npy: \(values.count) values do not fill shape \(shape)")
        }
        var bytes = header(descr: "<f4", shape: shape)
        bytes.reserveCapacity(bytes.count + values.count * 4)
        for v in values {
            let b = v.bitPattern.littleEndian
            bytes += [UInt8(b & 0xFF), UInt8((b >> 8) & 0xFF), UInt8((b >> 16) & 0xFF), UInt8(b >> 24)]
        }
        // Temporary file, fsync, rename; a target that is not a regular file (a device, a FIFO) is refused.
        try AtomicFile.write(bytes, to: path)
    }

    /// Writes `values` (see `write(_:shape:to:)`).
    public static func write(_ values: [Float], shape: [Int], to path: String) throws {
        try values.withUnsafeBufferPointer { try write($0, shape: shape, to: path) }
    }

    /// Writes an f32 tensor with its shape.
    public static func write(_ tensor: Tensor, to path: String) throws {
        guard tensor.dtype == .f32 else { throw AdapterError.unsupported("npy: only f32 tensors are written, got \(tensor.dtype)") }
        try write(UnsafeBufferPointer(start: UnsafePointer(tensor.floats), count: tensor.count), shape: tensor.shape, to: path)
    }

    /// Reads a `.npy` file (format 1.0, 2.0 or 3.0; C order; any fixed-size dtype kept as raw bytes).
    public static func read(path: String) throws -> Contents {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AdapterError.io("cannot read \(path)")
        }
        return try parse([UInt8](data), name: path)
    }

    /// Parses the bytes of a `.npy` file; `name` is used in error messages.
    public static func parse(_ bytes: [UInt8], name: String) throws -> Contents {
        func fail(_ why: String) -> AdapterError { .format("\(name): not a valid .npy file (\(why))") }
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1..<6]) == Array("NUMPY".utf8) else { throw fail("bad magic") }
        let major = bytes[6]
        let headerLength: Int, headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw fail("short header") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw fail("version \(major)")
        }
        guard headerStart + headerLength <= bytes.count else { throw fail("header runs past the end") }
        let text = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)

        func value(of key: String) -> Substring? {
            guard let k = text.range(of: "'\(key)'") else { return nil }
            var rest = text[k.upperBound...].drop(while: { $0 == " " || $0 == ":" })
            if rest.first == "(" {
                guard let close = rest.firstIndex(of: ")") else { return nil }
                return rest[rest.startIndex...close]
            }
            if rest.first == "'" {
                rest = rest.dropFirst()
                guard let close = rest.firstIndex(of: "'") else { return nil }
                return rest[rest.startIndex..<close]
            }
            return rest.prefix(while: { $0 != "," && $0 != "}" })
        }
        guard let descr = value(of: "descr") else { throw fail("no descr") }
        guard let fortran = value(of: "fortran_order") else { throw fail("no fortran_order") }
        guard fortran.trimmingCharacters(in: .whitespaces) == "False" else {
            throw AdapterError.unsupported("\(name): Fortran-order arrays are not supported")
        }
        guard let shapeText = value(of: "shape") else { throw fail("no shape") }
        var shape: [Int] = []
        for part in shapeText.dropFirst().dropLast().split(separator: ",") {
            let t = part.trimmingCharacters(in: .whitespaces)
            if t.isEmpty { continue }
            guard let n = Int(t), n >= 0 else { throw fail("bad shape \(shapeText)") }
            shape.append(n)
        }
        let itemSize: Int
        switch descr {
        case "|u1", "<u1", "|i1", "|b1": itemSize = 1
        case "<f2", "<i2", "<u2": itemSize = 2
        case "<f4", "<i4", "<u4": itemSize = 4
        case "<f8", "<i8", "<u8": itemSize = 8
        default: throw AdapterError.unsupported("\(name): npy dtype \(descr) is not supported")
        }
        var count = 1
        for d in shape {
            let (p, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else { throw fail("shape too large") }
            count = p
        }
        let dataStart = headerStart + headerLength
        let (byteCount, overflow) = count.multipliedReportingOverflow(by: itemSize)
        guard !overflow, bytes.count - dataStart >= byteCount else { throw fail("data shorter than shape \(shape)") }
        return Contents(shape: shape, descr: String(descr), data: Array(bytes[dataStart..<(dataStart + byteCount)]))
    }
}
