import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Raw bytes behind one or more tensors: either owned heap memory or a window into a memory-mapped file.
/// Tensors keep their storage alive, so a mapped checkpoint stays mapped while any of its tensors is used.
public final class Storage: @unchecked Sendable {
    /// First byte.
    public let base: UnsafeMutableRawPointer
    /// Number of bytes.
    public let byteCount: Int
    private let owner: AnyObject?
    private let ownsMemory: Bool

    /// Allocates zeroed, 64-byte aligned memory of `byteCount` bytes.
    public init(zeroedBytes byteCount: Int) {
        let n = max(byteCount, 1)
        base = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: n)
        self.byteCount = byteCount
        owner = nil
        ownsMemory = true
    }

    /// Allocates 64-byte aligned memory of `byteCount` bytes without clearing it (for buffers about to be filled).
    /// `hugePages`: 2 MB aligned and marked for transparent huge pages where the system offers them (large weight
    /// copies that kernels stream: fewer TLB misses); the size rounds up to whole 2 MB pages.
    public init(uninitializedBytes byteCount: Int, hugePages: Bool = false) {
        let huge = 2 << 20
        let n = hugePages ? (max(byteCount, 1) + huge - 1) / huge * huge : max(byteCount, 1)
        base = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: hugePages ? huge : 64)
        #if os(Linux)
        if hugePages { _ = madvise(base, n, MADV_HUGEPAGE) }
        #endif
        self.byteCount = byteCount
        owner = nil
        ownsMemory = true
    }

    /// Wraps bytes owned by `owner` (for example a `MappedFile`); they are not copied.
    public init(borrowing base: UnsafeRawPointer, byteCount: Int, owner: AnyObject) {
        self.base = UnsafeMutableRawPointer(mutating: base)
        self.byteCount = byteCount
        self.owner = owner
        ownsMemory = false
    }

    /// True for bytes borrowed from a file mapping (which the kernel can drop from memory and read again).
    public var isFileMapped: Bool { owner is MappedFile }

    /// Gives the resident pages of a file-mapped byte range back to the system (only whole pages inside it): a
    /// later read maps them from the file again. Used once a copy in another layout replaces the bytes for the
    /// hot paths, so the process does not hold both. Does nothing for heap memory, whose bytes would be lost.
    public func releaseResidentPages(offset: Int, count: Int) {
        guard isFileMapped, count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (Int(bitPattern: base + offset) + page - 1) / page * page
        let end = (Int(bitPattern: base + offset) + count) / page * page
        guard end > start, let p = UnsafeMutableRawPointer(bitPattern: start) else { return }
        _ = madvise(p, end - start, MADV_DONTNEED)
    }

    deinit { if ownsMemory { base.deallocate() } }
}

/// A read-only memory map of a whole file.
public final class MappedFile: @unchecked Sendable {
    /// Path the map was made from.
    public let path: String
    /// First byte of the file.
    public let base: UnsafeRawPointer
    /// Size of the file in bytes.
    public let size: Int

    /// Maps `path` read-only; throws a readable error when the file is missing or unreadable.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw AdapterError.io("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw AdapterError.io("cannot stat \(path)") }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw AdapterError.io("\(path) is a directory, expected a file") }
        size = Int(st.st_size)
        if size == 0 {
            base = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64))
            return
        }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else { throw AdapterError.io("cannot map \(path): \(String(cString: strerror(errno)))") }
        base = UnsafeRawPointer(p)
    }

    /// The mapped bytes as a buffer.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }

    deinit {
        if size == 0 { UnsafeMutableRawPointer(mutating: base).deallocate() } else { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }
}
