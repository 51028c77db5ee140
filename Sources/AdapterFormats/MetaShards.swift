import AdapterCore
import Foundation

/// Meta's model-parallel LLaMA checkpoint (`consolidated.00.pth`, `consolidated.01.pth`, ...) seen as one
/// `TensorSource`. Each shard holds a slice of the parallel layers (fairscale's Column/RowParallelLinear
/// and ParallelEmbedding), so merged tensors are concatenated on request: column-parallel weights on dim 0,
/// row-parallel weights and the embedding on dim 1; everything else (norms, `rope.freqs`) is replicated and
/// taken from shard 0. A single shard is passed through without copies.
public final class MetaShards: TensorSource {
    /// How a tensor is split across shards.
    public enum Split: Sendable, Equatable {
        /// Column-parallel: output features split, concatenate on dim 0.
        case dim0
        /// Row-parallel (and the embedding): input features split, concatenate on dim 1.
        case dim1
        /// The same on every shard.
        case replicated
    }

    /// Shard files, ordered by their index NN.
    public let paths: [String]
    /// The opened shards, in order.
    public let shards: [TorchCheckpoint]
    /// Names of all tensors, sorted.
    public let tensorNames: [String]
    private let infos: [String: TensorInfo]
    private let splits: [String: Split]

    /// Metadata of shard 0.
    public var metadata: [String: MetadataValue] { shards[0].metadata }

    /// Opens every `consolidated.NN.pth` in `directory`.
    public convenience init(directory: String) throws {
        try self.init(paths: Self.shardPaths(in: directory))
    }

    /// Opens the given shard files (in any order; they are sorted by NN) and checks that they fit together.
    public init(paths: [String]) throws {
        let ordered = try Self.sortedByShardIndex(paths)
        self.paths = ordered
        var shards: [TorchCheckpoint] = []
        for p in ordered {
            let root = try TorchCheckpoint.load(path: p)
            shards.append(try TorchCheckpoint(root: root, keyPath: TorchCheckpoint.defaultKeyPath(for: root), path: p))
        }
        self.shards = shards
        let first = shards[0]
        var infos: [String: TensorInfo] = [:]
        var splits: [String: Split] = [:]
        for shard in shards.dropFirst() {
            if let extra = Set(shard.tensorNames).subtracting(first.tensorNames).sorted().first {
                throw AdapterError.format("\(shard.path): tensor '\(extra)' is not in \(first.path)")
            }
        }
        for name in first.tensorNames {
            guard let base = first.info(name) else { continue }
            var split = Self.split(for: name)
            if split == .dim1 && base.shape.count < 2 { split = .replicated }
            if split == .dim0 && base.shape.isEmpty { split = .replicated }
            var merged = base
            for shard in shards.dropFirst() {
                guard let other = shard.info(name) else {
                    throw AdapterError.format("\(shard.path): tensor '\(printable(name))' is missing (present in \(first.path))")
                }
                guard other.dtype == base.dtype else {
                    throw AdapterError.format("\(shard.path): tensor '\(printable(name))' is \(other.dtype.rawValue) but \(base.dtype.rawValue) in \(first.path)")
                }
                let axis: Int? = split == .dim0 ? 0 : split == .dim1 ? 1 : nil
                var a = other.shape, b = base.shape
                if let axis, a.count == b.count { a[axis] = 0; b[axis] = 0 }
                guard a == b else {
                    throw AdapterError.shape("\(shard.path): tensor '\(printable(name))' has shape \(other.shape), which does not fit \(base.shape) in \(first.path)")
                }
                if let axis { merged.shape[axis] += other.shape[axis] }
            }
            infos[name] = merged
            splits[name] = split
        }
        self.infos = infos
        self.splits = splits
        self.tensorNames = first.tensorNames
    }

    /// Element type and merged shape of `name`.
    public func info(_ name: String) -> TensorInfo? { infos[name] }

    /// The merged tensor: shard 0's view for replicated tensors and single shards, else a new contiguous
    /// concatenation.
    public func tensor(_ name: String) throws -> Tensor {
        guard let info = infos[name], let split = splits[name] else {
            throw AdapterError.format("\(paths[0]): no tensor named '\(printable(name))'")
        }
        if shards.count == 1 || split == .replicated { return try shards[0].tensor(name) }
        let axis = split == .dim0 ? 0 : 1
        let parts = try shards.map { try $0.tensor(name) }
        let out = Tensor(zeros: info.shape, dtype: info.dtype)
        let elementBytes = info.dtype.byteCount(elements: 1)
        let outer = info.shape[..<axis].reduce(1, *)
        var dst = out.mutableData
        for o in 0..<outer {
            for part in parts {
                let chunk = part.shape[axis...].reduce(1, *) * elementBytes
                dst.copyMemory(from: part.data + o * chunk, byteCount: chunk)
                dst += chunk
            }
        }
        return out
    }

    /// How the tensor `name` is split across Meta shards, from its name.
    public static func split(for name: String) -> Split {
        let column = ["attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3", "output.weight"]
        let row = ["attention.wo", "feed_forward.w2", "tok_embeddings"]
        if column.contains(where: { name.contains($0) }) { return .dim0 }
        if row.contains(where: { name.contains($0) }) { return .dim1 }
        return .replicated
    }

    /// The shard index NN of a file named `consolidated.NN.pth`, or nil.
    public static func shardIndex(of path: String) -> Int? {
        let file = path.split(separator: "/").last.map(String.init) ?? path
        guard file.hasPrefix("consolidated."), file.hasSuffix(".pth") else { return nil }
        let digits = file.dropFirst("consolidated.".count).dropLast(".pth".count)
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber) else { return nil }
        return Int(digits)
    }

    /// `paths` ordered by shard index; refuses names without an index, duplicates and gaps.
    public static func sortedByShardIndex(_ paths: [String]) throws -> [String] {
        guard !paths.isEmpty else { throw AdapterError.invalidArgument("no consolidated.NN.pth shard files given") }
        var indexed: [(Int, String)] = []
        for p in paths {
            guard let i = shardIndex(of: p) else {
                throw AdapterError.invalidArgument("\(p): not a Meta shard file (expected a name like consolidated.00.pth)")
            }
            indexed.append((i, p))
        }
        indexed.sort { $0.0 < $1.0 }
        for (position, (i, p)) in indexed.enumerated() where i != position {
            throw AdapterError.invalidArgument("\(p): shard index \(i) found where \(position) was expected (missing or duplicate shard)")
        }
        return indexed.map(\.1)
    }

    /// The `consolidated.NN.pth` files in `directory`, ordered by NN.
    public static func shardPaths(in directory: String) throws -> [String] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw AdapterError.io("cannot list \(directory): \(error.localizedDescription)")
        }
        let shards = names.filter { shardIndex(of: $0) != nil }.map { (directory as NSString).appendingPathComponent($0) }
        guard !shards.isEmpty else { throw AdapterError.io("\(directory): no consolidated.NN.pth files") }
        return try sortedByShardIndex(shards)
    }
}
