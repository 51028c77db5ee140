// Lookup structures for the encoder: a byte-string hash table (piece -> id) probed with a pointer and
// a length, and a byte trie for user-defined symbols. Neither allocates per lookup.

/// An open-addressing hash table from byte strings to ids. Keys live in one flat buffer; a lookup
/// hashes the probe bytes in place (FNV-1a) and compares them against the stored key, so the BPE loop
/// can ask "is bytes[a..<b] a piece?" without building a String or an Array.
struct PieceTable: Sendable {
    private var storage: [UInt8] = []
    private var keyStart: [Int] = []
    private var keyLength: [Int] = []
    private var values: [Int32] = []
    private var slots: [Int32]
    private var mask: Int
    /// Length in bytes of the longest key; longer probes are rejected without hashing.
    private(set) var maxKeyLength = 0

    /// An empty table with room for `capacity` keys at load factor at most 1/2.
    init(capacity: Int) {
        var size = 16
        while size < 2 * capacity { size <<= 1 }
        slots = Array(repeating: -1, count: size)
        mask = size - 1
    }

    /// Number of keys.
    var count: Int { values.count }

    @inline(__always)
    private static func hash(_ key: UnsafeBufferPointer<UInt8>) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key {
            h ^= UInt64(byte)
            h &*= 0x0000_0100_0000_01b3
        }
        return Int(truncatingIfNeeded: h ^ (h >> 29))
    }

    @inline(__always)
    private func keyEquals(_ entry: Int, _ key: UnsafeBufferPointer<UInt8>) -> Bool {
        guard keyLength[entry] == key.count else { return false }
        let start = keyStart[entry]
        for k in 0..<key.count where storage[start + k] != key[k] { return false }
        return true
    }

    /// The id stored for `key`, or -1.
    func find(_ key: UnsafeBufferPointer<UInt8>) -> Int32 {
        if key.count > maxKeyLength { return -1 }
        var slot = Self.hash(key) & mask
        while true {
            let entry = slots[slot]
            if entry < 0 { return -1 }
            if keyEquals(Int(entry), key) { return values[Int(entry)] }
            slot = (slot + 1) & mask
        }
    }

    /// The id stored for `key`, or -1.
    func find(_ key: [UInt8]) -> Int32 {
        key.withUnsafeBufferPointer { find($0) }
    }

    /// Stores `key -> value` unless `key` is present (then returns false and keeps the old value),
    /// like `port::InsertIfNotPresent` in SentencePiece.
    mutating func insertIfAbsent(_ key: [UInt8], value: Int32) -> Bool {
        if values.count * 2 >= slots.count { grow() }
        return key.withUnsafeBufferPointer { probe in
            var slot = Self.hash(probe) & mask
            while true {
                let entry = slots[slot]
                if entry < 0 { break }
                if keyEquals(Int(entry), probe) { return false }
                slot = (slot + 1) & mask
            }
            slots[slot] = Int32(values.count)
            keyStart.append(storage.count)
            keyLength.append(probe.count)
            values.append(value)
            storage.append(contentsOf: probe)
            maxKeyLength = max(maxKeyLength, probe.count)
            return true
        }
    }

    private mutating func grow() {
        let size = slots.count * 2
        slots = Array(repeating: -1, count: size)
        mask = size - 1
        for entry in 0..<values.count {
            let start = keyStart[entry], length = keyLength[entry]
            var slot = storage.withUnsafeBufferPointer { Self.hash(UnsafeBufferPointer(rebasing: $0[start..<start + length])) } & mask
            while slots[slot] >= 0 { slot = (slot + 1) & mask }
            slots[slot] = Int32(entry)
        }
    }
}

/// A byte trie of user-defined symbols: SentencePiece's `PrefixMatcher` (a Darts double array built
/// from the symbols as C strings, so a symbol ends at its first NUL byte).
struct PrefixMatcher: Sendable {
    private var children: [[UInt8: Int32]] = [[:]]
    private var terminal: [Bool] = [false]

    /// True when no symbol was added; then every match is one UTF-8 character.
    private(set) var isEmpty = true

    /// Adds a symbol.
    mutating func insert(_ symbol: [UInt8]) {
        let key = symbol.prefix { $0 != 0 }
        guard !key.isEmpty else { return }
        var node = 0
        for byte in key {
            if let next = children[node][byte] {
                node = Int(next)
            } else {
                children.append([:])
                terminal.append(false)
                children[node][byte] = Int32(children.count - 1)
                node = children.count - 1
            }
        }
        terminal[node] = true
        isEmpty = false
    }

    /// Length of the longest symbol that starts `text[from...]`, or 0 when none does.
    func longestMatch(_ text: UnsafeBufferPointer<UInt8>, from: Int) -> Int {
        var node = 0
        var best = 0
        var i = from
        while i < text.count, let next = children[node][text[i]] {
            node = Int(next)
            i += 1
            if terminal[node] { best = i - from }
        }
        return best
    }

    /// `PrefixMatcher::PrefixMatch`: the length of the longest user-defined symbol at `from` and true,
    /// or the length of one UTF-8 character (by its lead byte, clipped to the text) and false.
    @inline(__always)
    func prefixMatch(_ text: UnsafeBufferPointer<UInt8>, from: Int) -> (length: Int, found: Bool) {
        if !isEmpty {
            let length = longestMatch(text, from: from)
            if length > 0 { return (length, true) }
        }
        return (min(text.count - from, utf8CharLength(leadByte: text[from])), false)
    }
}
