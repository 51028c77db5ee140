import Foundation
import AdapterCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Whole-file writes that never leave a partial file: bytes go to a temporary file in the target's folder,
/// are fsynced, and the temporary file is renamed over the target (then the folder is fsynced).
public enum AtomicFile {
    /// Temporary files being written, as C strings, so a signal handler can remove them (`removeTemporaryFiles`).
    nonisolated(unsafe) private static let inProgress: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = {
        let p = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: slots)
        p.initialize(repeating: nil, count: slots)
        return p
    }()
    private static let slots = 16
    private static let registry = NSLock()

    /// Fails now, before hours of work, when `path` could not be written later: it exists and is not a regular
    /// file, or its folder does not exist.
    public static func checkTarget(_ path: String) throws {
        var st = stat()
        if stat(path, &st) == 0, (st.st_mode & S_IFMT) != S_IFREG {
            throw AdapterError.io("cannot write \(path): it exists and is not a regular file")
        }
        let dir = (path as NSString).deletingLastPathComponent
        var ds = stat()
        guard stat(dir.isEmpty ? "." : dir, &ds) == 0, (ds.st_mode & S_IFMT) == S_IFDIR else {
            throw AdapterError.io("cannot write \(path): the folder \(dir.isEmpty ? "." : dir) does not exist")
        }
    }

    /// Unlinks every temporary file a write has not finished: for SIGINT/SIGTERM handlers (it only calls unlink).
    public static func removeTemporaryFiles() {
        for i in 0..<slots { if let p = inProgress[i] { unlink(p) } }
    }

    /// Registers a temporary file for `removeTemporaryFiles` (nil when all slots are taken).
    static func track(_ path: String) -> Int? {
        registry.lock(); defer { registry.unlock() }
        for i in 0..<slots where inProgress[i] == nil { inProgress[i] = strdup(path); return i }
        return nil
    }

    /// Forgets a registered temporary file.
    static func untrack(_ slot: Int?) {
        guard let slot else { return }
        registry.lock(); defer { registry.unlock() }
        let p = inProgress[slot]
        inProgress[slot] = nil
        free(p)
    }

    /// Writes `bytes` to `path` atomically. Refuses a target that exists and is not a regular file (a device,
    /// a FIFO, a folder), so a mistyped path never replaces something that is not a file.
    public static func write(_ bytes: [UInt8], to path: String) throws {
        try write(to: path) { sink in try bytes.withUnsafeBytes { try sink($0) } }
    }

    /// Streams a file atomically: `body` receives a function that appends bytes.
    public static func write(to path: String, body: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
        var st = stat()
        if stat(path, &st) == 0, (st.st_mode & S_IFMT) != S_IFREG {
            throw AdapterError.io("cannot write \(path): it exists and is not a regular file")
        }
        let dir = (path as NSString).deletingLastPathComponent
        let directory = dir.isEmpty ? "." : dir
        let name = (path as NSString).lastPathComponent
        let temp = directory + "/." + name + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw AdapterError.io("cannot write \(path): cannot create a file in \(directory): \(String(cString: strerror(errno)))") }
        var ok = false
        let slot = track(temp)
        defer { if !ok { unlink(temp) }; untrack(slot) }
        do {
            try body { buf in
                var off = 0
                while off < buf.count {
                    let n = systemWrite(fd, buf.baseAddress! + off, buf.count - off)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw AdapterError.io("cannot write \(path): \(String(cString: strerror(errno)))")
                    }
                    off += n
                }
            }
        } catch {
            close(fd)
            throw error
        }
        let synced = fsync(fd) == 0
        let err = errno
        close(fd)
        guard synced else { throw AdapterError.io("cannot write \(path): \(String(cString: strerror(err)))") }
        guard rename(temp, path) == 0 else { throw AdapterError.io("cannot write \(path): rename failed: \(String(cString: strerror(errno)))") }
        ok = true
        let dfd = open(directory, O_RDONLY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }
}

/// Writes safetensors files: an 8-byte little-endian header length, the JSON header (`dtype`, `shape`,
/// `data_offsets` per tensor, `__metadata__` strings), then the tensors' bytes, 8-byte aligned.
public enum SafetensorsWriter {
    /// Saves `tensors` (f32, f16 or bf16) in the given order with string `metadata`, atomically.
    public static func write(_ tensors: [(String, Tensor)], metadata: [String: String], to path: String) throws {
        var header = "{"
        if !metadata.isEmpty {
            header += "\"__metadata__\":{" + metadata.keys.sorted().map { "\(json($0)):\(json(metadata[$0]!))" }.joined(separator: ",") + "},"
        }
        var offset = 0
        var parts: [String] = []
        for (name, t) in tensors {
            let dtype: String
            switch t.dtype {
            case .f32: dtype = "F32"
            case .f16: dtype = "F16"
            case .bf16: dtype = "BF16"
            default: throw AdapterError.unsupported("safetensors cannot hold \(t.dtype.rawValue) tensor '\(name)'")
            }
            parts.append("\(json(name)):{\"dtype\":\"\(dtype)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + t.byteCount)]}")
            offset += t.byteCount
        }
        header += parts.joined(separator: ",") + "}"
        var h = Array(header.utf8)
        while (h.count + 8) % 8 != 0 { h.append(0x20) }
        var out: [UInt8] = []
        out.reserveCapacity(8 + h.count + offset)
        withUnsafeBytes(of: UInt64(h.count).littleEndian) { out.append(contentsOf: $0) }
        out += h
        for (_, t) in tensors {
            out.append(contentsOf: UnsafeRawBufferPointer(start: t.data, count: t.byteCount))
        }
        try AtomicFile.write(out, to: path)
    }

    /// `s` as a JSON string literal (quotes, backslashes and control characters escaped).
    public static func json(_ s: String) -> String {
        var o = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": o += "\\\""
            case "\\": o += "\\\\"
            default:
                if u.value < 0x20 { o += String(format: "\\u%04x", u.value) } else { o.unicodeScalars.append(u) }
            }
        }
        return o + "\""
    }
}

@inline(__always)
private func systemWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int {
    #if canImport(Glibc)
    return Glibc.write(fd, p, n)
    #else
    return Darwin.write(fd, p, n)
    #endif
}
