import AdapterCore

/// A TorchScript archive (`torch.jit.save`, e.g. OpenAI's CLIP `ViT-L-14.pt`) read as a state dict.
/// Its `data.pkl` pickles the module object tree, not a dict: every `__torch__.*` module is an inert
/// object whose state maps attribute names to tensors and submodules. Walking that tree yields the names
/// `torch.jit.load(...).state_dict()` would give (`visual.conv1.weight`). Nothing in the archive runs.
public enum TorchScriptArchive {
    /// Opens `path` and returns its parameters and buffers under their dotted state-dict names.
    public static func open(path: String) throws -> TorchCheckpoint {
        let root = try TorchCheckpoint.load(path: path, options: .torchScript)
        var entries: [(key: PickleValue, value: PickleValue)] = []
        var seen = Set<String>()
        func walk(_ value: PickleValue, _ prefix: String, depth: Int) throws {
            guard depth < 64 else { throw AdapterError.format("\(path): module tree nested deeper than 64 levels") }
            switch value {
            case .tensor:
                if !prefix.isEmpty, seen.insert(prefix).inserted { entries.append((key: .string(prefix), value: value)) }
            case .object(let o):
                guard let state = o.state?.dictEntries else { return }
                for (k, v) in state {
                    guard let name = k.stringValue, !name.hasPrefix("_") || name == "_parameters" else { continue }
                    try walk(v, prefix.isEmpty ? name : prefix + "." + name, depth: depth + 1)
                }
            default:
                return
            }
        }
        try walk(root, "", depth: 0)
        guard !entries.isEmpty else { throw AdapterError.format("\(path): the TorchScript archive holds no tensors") }
        return try TorchCheckpoint(root: .dict(entries), keyPath: [], path: path)
    }
}
