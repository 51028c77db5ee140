// Stage 2 of encoding: SentencePiece's `bpe::Model::Encode` (src/bpe_model.cc, `SampleEncode` with
// dropout 0), merge for merge and tie for tie.

/// A segment of the normalized text and the id it maps to.
struct Segment {
    /// Byte offset into the normalized text.
    var start: Int
    /// Length in bytes.
    var length: Int
    /// `PieceToId` of those bytes (the unknown id when they are not a piece).
    var id: Int32
}

/// The BPE segmenter. Pieces live in two tables, as in `ModelInterface::InitializePieces`: NORMAL,
/// USER_DEFINED and UNUSED pieces may be formed by merges (`pieces_`); UNKNOWN, CONTROL and BYTE pieces
/// are only found by exact lookup (`reserved_id_map_`), which `pieceToId` tries first.
struct BPEModel: Sendable {
    let mergeable: PieceTable
    let reserved: PieceTable
    let scores: [Float]
    let types: [SentencePieceModel.PieceType]
    let unkId: Int32
    let userDefined: PrefixMatcher
    let hasUnusedPieces: Bool

    /// `ModelInterface::PieceToId`: reserved pieces first, then mergeable ones, else the unknown id.
    @inline(__always)
    func pieceToId(_ key: UnsafeBufferPointer<UInt8>) -> Int32 {
        let r = reserved.find(key)
        if r >= 0 { return r }
        let m = mergeable.find(key)
        return m >= 0 ? m : unkId
    }

    /// A merge candidate: adjacent symbols `left` and `right` whose concatenation (`size` bytes) is a
    /// piece with `score`.
    private struct Candidate {
        var score: Float
        var left: Int32
        var right: Int32
        var size: Int32

        /// SentencePiece's agenda order: higher score first, then the leftmost pair.
        @inline(__always)
        func precedes(_ other: Candidate) -> Bool {
            score > other.score || (score == other.score && left < other.left)
        }
    }

    /// A binary max-heap of candidates ordered by `Candidate.precedes`.
    private struct Agenda {
        var items: [Candidate] = []

        var isEmpty: Bool { items.isEmpty }

        mutating func push(_ c: Candidate) {
            items.append(c)
            var i = items.count - 1
            while i > 0 {
                let parent = (i - 1) / 2
                guard items[i].precedes(items[parent]) else { break }
                items.swapAt(i, parent)
                i = parent
            }
        }

        mutating func pop() -> Candidate {
            let top = items[0]
            let last = items.removeLast()
            if !items.isEmpty {
                items[0] = last
                var i = 0
                let n = items.count
                while true {
                    let l = 2 * i + 1, r = l + 1
                    var best = i
                    if l < n && items[l].precedes(items[best]) { best = l }
                    if r < n && items[r].precedes(items[best]) { best = r }
                    if best == i { break }
                    items.swapAt(i, best)
                    i = best
                }
            }
            return top
        }
    }

    /// Segments normalized text into pieces.
    ///
    /// Algorithm (SentencePiece's, step for step): split the text into symbols (one UTF-8 character
    /// each, or a whole user-defined symbol, which is frozen); push every adjacent pair whose
    /// concatenation is a piece onto a max-heap keyed by that piece's score, ties to the leftmost pair;
    /// pop the best pair, skip it if stale (either side emptied or resized since it was pushed), else
    /// merge it into the left symbol of a doubly linked list and push the two new neighbour pairs.
    /// Finally every UNUSED piece is split back into the pair it was last recorded as formed from
    /// (`rev_merge`), recursively.
    ///
    /// Cost: O(n log n) for n characters: at most n-1 merges, each pushing at most two candidates,
    /// each push/pop O(log n); a candidate lookup hashes at most the longest piece's bytes and never
    /// allocates.
    func encode(_ normalized: [UInt8]) -> [Segment] {
        if normalized.isEmpty { return [] }
        return normalized.withUnsafeBufferPointer { text -> [Segment] in
            // Symbols as a doubly linked list over arrays; length 0 marks a symbol merged away.
            var start: [Int] = []
            var length: [Int] = []
            var frozen: [Bool] = []
            start.reserveCapacity(text.count)
            length.reserveCapacity(text.count)
            frozen.reserveCapacity(text.count)
            var offset = 0
            while offset < text.count {
                let (len, found) = userDefined.prefixMatch(text, from: offset)
                start.append(offset)
                length.append(len)
                frozen.append(found)
                offset += len
            }
            let count = start.count
            var prev = [Int](unsafeUninitializedCapacity: count) { buf, n in
                for i in 0..<count { buf[i] = i - 1 }
                n = count
            }
            var next = [Int](unsafeUninitializedCapacity: count) { buf, n in
                for i in 0..<count { buf[i] = i + 1 < count ? i + 1 : -1 }
                n = count
            }

            var agenda = Agenda()
            agenda.items.reserveCapacity(2 * count)
            // rev_merge: for an UNUSED piece id, the (start, length) of the left and right symbols it was
            // last pushed as. Keyed by id, which is the same as SentencePiece's key (the piece string).
            var revMerge: [Int32: (Int, Int, Int, Int)] = [:]

            func maybeAddPair(_ left: Int, _ right: Int) {
                if left < 0 || right < 0 || frozen[left] || frozen[right] { return }
                let size = length[left] + length[right]
                if size > mergeable.maxKeyLength { return }
                let id = mergeable.find(UnsafeBufferPointer(rebasing: text[start[left]..<start[left] + size]))
                if id < 0 { return }
                agenda.push(Candidate(score: scores[Int(id)], left: Int32(left), right: Int32(right), size: Int32(size)))
                if hasUnusedPieces && types[Int(id)] == .unused {
                    revMerge[id] = (start[left], length[left], start[right], length[right])
                }
            }

            for i in 1..<max(count, 1) { maybeAddPair(i - 1, i) }

            while !agenda.isEmpty {
                let top = agenda.pop()
                let left = Int(top.left), right = Int(top.right)
                if length[left] == 0 || length[right] == 0 || length[left] + length[right] != Int(top.size) {
                    continue
                }
                length[left] += length[right]
                next[left] = next[right]
                if next[right] >= 0 { prev[next[right]] = left }
                length[right] = 0
                maybeAddPair(prev[left], left)
                maybeAddPair(left, next[left])
            }

            var segments: [Segment] = []
            segments.reserveCapacity(count)
            var stack: [(Int, Int)] = []
            var index = 0
            while index != -1 {
                if !hasUnusedPieces {
                    let s = start[index], l = length[index]
                    segments.append(Segment(start: s, length: l, id: pieceToId(UnsafeBufferPointer(rebasing: text[s..<s + l]))))
                } else {
                    // Resegment UNUSED pieces depth-first, left before right, without recursion.
                    stack.append((start[index], length[index]))
                    while let (s, l) = stack.popLast() {
                        let id = pieceToId(UnsafeBufferPointer(rebasing: text[s..<s + l]))
                        if types[Int(id)] == .unused, let (ls, ll, rs, rl) = revMerge[id] {
                            stack.append((rs, rl))
                            stack.append((ls, ll))
                        } else {
                            segments.append(Segment(start: s, length: l, id: id))
                        }
                    }
                }
                index = next[index]
            }
            return segments
        }
    }
}
