import AdapterCore

/// A read-only zip reader over a memory-mapped file, for archives whose entries are STORED (PyTorch
/// checkpoints, TorchScript archives): entry data is returned as views of the map, never copied.
///
/// Supports ZIP64 (LLaMA-7B shards exceed 4 GB) and takes each entry's data start from its local header,
/// because PyTorch pads local headers with an `FB` extra field (for 64-byte alignment) that the central
/// directory does not repeat. Sizes come from the central directory: PyTorch sets the data-descriptor flag,
/// so local headers may carry zero sizes.
public final class ZipArchive {
    /// One file in the archive, as the central directory describes it.
    public struct Entry: Sendable {
        /// Path inside the archive.
        public let name: String
        /// Compression method (0 = STORED, 8 = DEFLATE).
        public let method: UInt16
        /// General-purpose flags (bit 0: encrypted).
        public let flags: UInt16
        /// Stored size in bytes.
        public let compressedSize: Int
        /// Size after decompression in bytes.
        public let uncompressedSize: Int
        /// Offset of the entry's local header in the file.
        public let localHeaderOffset: Int
    }

    /// The mapped file; entry views keep it alive through `Storage` ownership.
    public let file: MappedFile
    /// Entries in central-directory order.
    public let entries: [Entry]
    private let index: [String: Int]

    private static let eocdSignature: UInt32 = 0x0605_4B50
    private static let eocd64Signature: UInt32 = 0x0606_4B50
    private static let eocd64LocatorSignature: UInt32 = 0x0706_4B50
    private static let centralSignature: UInt32 = 0x0201_4B50
    private static let localSignature: UInt32 = 0x0403_4B50

    /// Maps `path` and reads its central directory.
    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    /// Reads the central directory of an already mapped file.
    public init(file: MappedFile) throws {
        self.file = file
        let path = file.path
        let bytes = file.bytes
        let (cdOffset, cdSize, count) = try Self.locateCentralDirectory(bytes, path: path)

        // Every central header is at least 46 bytes, which bounds `count` before anything is reserved.
        guard count <= cdSize / 46 else {
            throw AdapterError.format("\(path): corrupt zip (central directory claims \(count) entries in \(cdSize) bytes)")
        }
        let cd = UnsafeRawBufferPointer(rebasing: bytes[cdOffset..<(cdOffset + cdSize)])
        var r = ByteReader(cd, context: "\(path): zip central directory")
        var entries: [Entry] = []
        entries.reserveCapacity(count)
        for _ in 0..<count {
            guard try r.u32("entry signature") == Self.centralSignature else {
                throw AdapterError.format("\(path): corrupt zip (bad central directory entry signature at byte \(cdOffset + r.position - 4))")
            }
            try r.skip(4) // version made by, version needed
            let flags = try r.u16()
            let method = try r.u16()
            try r.skip(8) // time, date, crc
            let csize32 = try r.u32()
            let usize32 = try r.u32()
            let nameLength = Int(try r.u16())
            let extraLength = Int(try r.u16())
            let commentLength = Int(try r.u16())
            let disk = try r.u16()
            try r.skip(6) // internal and external attributes
            let offset32 = try r.u32()
            let nameBytes = try r.slice(nameLength, "entry name")
            let extra = try r.slice(extraLength, "extra field")
            try r.skip(commentLength, "entry comment")
            let name = String(decoding: nameBytes, as: UTF8.self)

            var usize = UInt64(usize32), csize = UInt64(csize32), offset = UInt64(offset32)
            if usize32 == 0xFFFF_FFFF || csize32 == 0xFFFF_FFFF || offset32 == 0xFFFF_FFFF {
                // ZIP64 extra: only the fields saturated in the fixed header are present, in this order.
                guard let z64 = try Self.findExtra(0x0001, in: extra, path: path) else {
                    throw AdapterError.format("\(path): corrupt zip (entry '\(printable(name))' has 32-bit overflow sizes but no ZIP64 extra field)")
                }
                var zr = ByteReader(z64, context: "\(path): ZIP64 extra field of '\(printable(name))'")
                if usize32 == 0xFFFF_FFFF { usize = try zr.u64("uncompressed size") }
                if csize32 == 0xFFFF_FFFF { csize = try zr.u64("compressed size") }
                if offset32 == 0xFFFF_FFFF { offset = try zr.u64("local header offset") }
            }
            guard disk == 0 || disk == 0xFFFF else {
                throw AdapterError.unsupported("\(path): multi-volume zip archives are not supported")
            }
            guard let u = usize.checkedInt, let c = csize.checkedInt, let o = offset.checkedInt,
                  o <= bytes.count, c <= bytes.count else {
                throw AdapterError.format("\(path): corrupt zip (entry '\(printable(name))' lies outside the file; truncated?)")
            }
            entries.append(Entry(name: name, method: method, flags: flags, compressedSize: c,
                                 uncompressedSize: u, localHeaderOffset: o))
        }
        self.entries = entries
        var index: [String: Int] = [:]
        for (i, e) in entries.enumerated() { index[e.name] = i }
        self.index = index
    }

    /// The path of the mapped file.
    public var path: String { file.path }

    /// The entry called `name`, if present.
    public func entry(named name: String) -> Entry? {
        index[name].map { entries[$0] }
    }

    /// Offset in the file of the first data byte of `entry`; checks the local header and that the stored
    /// bytes fit inside the file. Refuses compressed and encrypted entries.
    public func dataOffset(of entry: Entry) throws -> Int {
        let path = file.path
        if entry.flags & 1 != 0 {
            throw AdapterError.unsupported("\(path): zip entry '\(printable(entry.name))' is encrypted")
        }
        guard entry.method == 0 else {
            let kind = entry.method == 8 ? "deflate" : "method \(entry.method)"
            throw AdapterError.unsupported("\(path): zip entry '\(printable(entry.name))' is compressed (\(kind)); only uncompressed (STORED) entries are supported, as torch.save writes them")
        }
        guard entry.compressedSize == entry.uncompressedSize else {
            throw AdapterError.format("\(path): corrupt zip (STORED entry '\(printable(entry.name))' has different stored and original sizes)")
        }
        var r = ByteReader(file.bytes, position: entry.localHeaderOffset, context: "\(path): local header of '\(printable(entry.name))'")
        guard try r.u32("signature") == Self.localSignature else {
            throw AdapterError.format("\(path): corrupt zip (bad local header signature for '\(printable(entry.name))')")
        }
        try r.skip(22)
        let nameLength = Int(try r.u16())
        let extraLength = Int(try r.u16())
        let localName = try r.slice(nameLength, "entry name")
        guard localName.elementsEqual(entry.name.utf8) else {
            throw AdapterError.format("\(path): corrupt zip (local header name differs from central directory for '\(printable(entry.name))')")
        }
        try r.skip(extraLength, "local extra field")
        let start = r.position
        guard entry.compressedSize <= file.size - start else {
            throw AdapterError.format("\(path): truncated or corrupt zip (data of '\(printable(entry.name))' runs past the end of the file)")
        }
        return start
    }

    /// The stored bytes of `entry` as a view of the map (no copy).
    public func data(of entry: Entry) throws -> UnsafeRawBufferPointer {
        let start = try dataOffset(of: entry)
        return UnsafeRawBufferPointer(start: file.base + start, count: entry.compressedSize)
    }

    /// The stored bytes of `entry` as a `Storage` that borrows the map and keeps it alive.
    public func storage(of entry: Entry) throws -> Storage {
        let start = try dataOffset(of: entry)
        return Storage(borrowing: file.base + start, byteCount: entry.compressedSize, owner: file)
    }

    // MARK: - End of central directory

    private static func locateCentralDirectory(_ bytes: UnsafeRawBufferPointer, path: String) throws -> (offset: Int, size: Int, count: Int) {
        let notZip = AdapterError.format("\(path): not a zip archive or truncated (no end-of-central-directory record found)")
        guard bytes.count >= 22 else { throw notZip }
        // The EOCD is 22 bytes plus a comment of up to 65535 bytes, so it starts in the last 65557 bytes.
        var pos = bytes.count - 22
        let lowest = max(0, bytes.count - 22 - 0xFFFF)
        var found: Int? = nil
        while pos >= lowest {
            if bytes[pos] == 0x50, bytes[pos + 1] == 0x4B, bytes[pos + 2] == 0x05, bytes[pos + 3] == 0x06 {
                let commentLength = Int(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: pos + 20, as: UInt16.self)))
                if pos + 22 + commentLength <= bytes.count { found = pos; break }
            }
            pos -= 1
        }
        guard let eocd = found else { throw notZip }

        var r = ByteReader(bytes, position: eocd + 4, context: "\(path): end of central directory")
        let diskNumber = try r.u16()
        let cdDisk = try r.u16()
        try r.skip(2) // entries on this disk
        let count16 = try r.u16()
        let size32 = try r.u32()
        let offset32 = try r.u32()

        var count = UInt64(count16), size = UInt64(size32), offset = UInt64(offset32)
        let hasLocator = eocd >= 20 &&
            UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: eocd - 20, as: UInt32.self)) == eocd64LocatorSignature
        if hasLocator {
            var lr = ByteReader(bytes, position: eocd - 16, context: "\(path): ZIP64 locator")
            try lr.skip(4) // disk with the EOCD64 record
            guard let recordOffset = try lr.u64().checkedInt, recordOffset < bytes.count else {
                throw AdapterError.format("\(path): truncated or corrupt zip (ZIP64 end-of-central-directory record lies outside the file)")
            }
            var zr = ByteReader(bytes, position: recordOffset, context: "\(path): ZIP64 end of central directory")
            guard try zr.u32("signature") == eocd64Signature else {
                throw AdapterError.format("\(path): corrupt zip (bad ZIP64 end-of-central-directory signature)")
            }
            try zr.skip(8 + 2 + 2 + 4 + 4 + 8) // record size, versions, disk numbers, entries on this disk
            count = try zr.u64("entry count")
            size = try zr.u64("central directory size")
            offset = try zr.u64("central directory offset")
        } else {
            if diskNumber != 0 || cdDisk != 0 {
                throw AdapterError.unsupported("\(path): multi-volume zip archives are not supported")
            }
            if count16 == 0xFFFF || size32 == 0xFFFF_FFFF || offset32 == 0xFFFF_FFFF {
                throw AdapterError.format("\(path): truncated or corrupt zip (ZIP64 sizes announced but no ZIP64 locator found)")
            }
        }
        guard let o = offset.checkedInt, let s = size.checkedInt, let c = count.checkedInt,
              o <= bytes.count, s <= bytes.count - o else {
            throw AdapterError.format("\(path): truncated or corrupt zip (central directory lies outside the file)")
        }
        return (o, s, c)
    }

    private static func findExtra(_ id: UInt16, in extra: UnsafeRawBufferPointer, path: String) throws -> UnsafeRawBufferPointer? {
        var r = ByteReader(extra, context: "\(path): zip extra field")
        while r.remaining >= 4 {
            let tag = try r.u16()
            let size = Int(try r.u16())
            let body = try r.slice(size, "extra field body")
            if tag == id { return body }
        }
        return nil
    }
}
