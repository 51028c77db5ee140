// The adapter as a trainer sees it: every adapter tensor under its official name, in f32 memory the optimiser
// updates in place, with a gradient buffer when trained. The model reads the same memory: `adapterWeights()`
// binds views of it through the loader's own binding code, so training runs the inference forward.
import Foundation
import AdapterCore
import AdapterFormats
import AdapterModel

/// One adapter tensor: official name, checkpoint shape, f32 values, and a gradient when it is trained.
public final class Parameter: @unchecked Sendable {
    /// Official checkpoint name (`llama.layers.3.attention.wq.bias`, `visual_query.weight`, ...).
    public let name: String
    /// Shape as saved (the gate is (1, heads, 1, 1), as the official code declares it).
    public let shape: [Int]
    /// Number of elements.
    public let count: Int
    /// The f32 values (owned memory that the bound adapter views).
    public let storage: Storage
    /// The dtype to save when the parameter stays frozen (trained tensors are saved as f32, as the official code).
    public let frozenDType: DType
    /// Which trainable group the parameter belongs to (nil: frozen).
    public internal(set) var group: Int?
    /// Gradient, allocated for trained parameters.
    public internal(set) var grad: UnsafeMutablePointer<Float>?
    /// Whether a gradient reached it since the last `zeroGrad` (PyTorch: `p.grad is not None`). An untouched
    /// parameter is skipped by AdamW, weight decay included, and left out of the gradient norm.
    public internal(set) var touched = false

    /// Values.
    public var values: UnsafeMutablePointer<Float> { storage.base.assumingMemoryBound(to: Float.self) }
    /// Whether weight decay applies (official `add_weight_decay`: not to 1-D tensors nor names ending in `.bias`).
    public var decays: Bool { shape.count > 1 && !name.hasSuffix(".bias") }

    /// A parameter holding `values` (count must match `shape`).
    public init(name: String, shape: [Int], values: [Float], frozenDType: DType = .f32) {
        precondition(values.count == shape.reduce(1, *), "\(name): \(values.count) values for shape \(shape)")
        self.name = name
        self.shape = shape
        count = values.count
        storage = Storage(zeroedBytes: max(1, count) * 4)
        self.frozenDType = frozenDType
        values.withUnsafeBufferPointer { storage.base.copyMemory(from: $0.baseAddress!, byteCount: count * 4) }
    }

    deinit { grad?.deallocate() }

    /// An f32 tensor viewing the values with the saved shape.
    public var tensor: Tensor { try! Tensor(shape: shape, dtype: .f32, storage: storage) }

    func makeTrainable(group g: Int) {
        group = g
        if grad == nil {
            grad = .allocate(capacity: max(count, 1))
            grad!.initialize(repeating: 0, count: max(count, 1))
        }
    }

    /// The gradient buffer to accumulate into when `active` includes the parameter's group, marking it touched.
    func gradient(active: Set<Int>) -> UnsafeMutablePointer<Float>? {
        guard let g = group, active.contains(g), let grad else { return nil }
        touched = true
        return grad
    }

    func zeroGrad() {
        grad?.update(repeating: 0, count: count)
        touched = false
    }
}

/// All adapter tensors of one training run, in checkpoint order, plus the `config` dict they are saved with.
/// It is a `TensorSource`, so the loader binds it exactly as it binds a checkpoint file.
public final class ParameterStore: TensorSource, @unchecked Sendable {
    /// Parameters in checkpoint order.
    public let parameters: [Parameter]
    private let byName: [String: Parameter]
    /// The checkpoint's `config` dict entries (`w_bias`, `w_lora`, `lora_rank`, architecture keys), in order.
    public private(set) var config: [(String, PickleWriteValue)]
    /// Where the initial values came from ("fresh" for a new adapter).
    public let origin: String

    /// A store over `parameters` (names must be unique).
    public init(parameters: [Parameter], config: [(String, PickleWriteValue)], origin: String) throws {
        var map: [String: Parameter] = [:]
        for p in parameters {
            guard map[p.name] == nil else { throw AdapterError.format("duplicate adapter parameter '\(p.name)'") }
            map[p.name] = p
        }
        self.parameters = parameters
        byName = map
        self.config = config
        self.origin = origin
    }

    /// Sets (or adds) a key of the checkpoint's `config` dict.
    public func setConfig(_ key: String, _ value: PickleWriteValue) {
        if let i = config.firstIndex(where: { $0.0 == key }) { config[i].1 = value } else { config.append((key, value)) }
    }

    /// The parameter called `name`.
    public subscript(name: String) -> Parameter? { byName[name] }

    /// Copies every tensor of an adapter checkpoint into f32 parameters (frozen ones remember their dtype).
    public static func load(path: String) throws -> ParameterStore {
        guard try FileFormat.detect(path: path) == .pytorch else {
            throw AdapterError.format("\(path) is not a PyTorch checkpoint (.pth written by torch.save)")
        }
        let ckpt = try TorchCheckpoint(path: path)
        var params: [Parameter] = []
        for name in ckpt.tensorNames {
            let t = try ckpt.tensor(name)
            params.append(Parameter(name: name, shape: t.shape, values: t.toFloatArray(), frozenDType: t.dtype))
        }
        var config: [(String, PickleWriteValue)] = []
        if let cfg = ckpt.metadata["config"]?.dictValue {
            for key in cfg.keys.sorted() {
                switch cfg[key]! {
                case .bool(let b): config.append((key, .bool(b)))
                case .int(let i): config.append((key, .int(i)))
                case .double(let d): config.append((key, .double(d)))
                case .string(let s): config.append((key, .string(s)))
                default: continue
                }
            }
        }
        // The official order of the three keys every released file has first.
        let officialOrder = ["w_bias", "w_lora", "lora_rank"]
        config.sort { (officialOrder.firstIndex(of: $0.0) ?? 99, $0.0) < (officialOrder.firstIndex(of: $1.0) ?? 99, $1.0) }
        return try ParameterStore(parameters: params, config: config, origin: path)
    }

    /// The store as the official `pretrain` model loads it: that model is built with `w_bias = (phase ==
    /// "finetune")`, so it has no bias parameters and `load_state_dict(strict=False)` ignores a checkpoint's
    /// `llama.*.bias` keys. Returns a store without them (and `w_bias` false), or self when there are none.
    public func droppingLlamaBiases() throws -> ParameterStore {
        func isBias(_ n: String) -> Bool { n.hasPrefix("llama.") && n.hasSuffix(".bias") }
        guard parameters.contains(where: { isBias($0.name) }) else { return self }
        return try ParameterStore(parameters: parameters.filter { !isBias($0.name) },
                                  config: config.map { $0.0 == "w_bias" ? ($0.0, .bool(false)) : $0 }, origin: origin)
    }

    // MARK: TensorSource

    /// Parameter names, sorted.
    public var tensorNames: [String] { byName.keys.sorted() }
    /// f32 and the saved shape.
    public func info(_ name: String) -> TensorInfo? { byName[name].map { TensorInfo(dtype: .f32, shape: $0.shape) } }
    /// A view of the parameter's values.
    public func tensor(_ name: String) throws -> Tensor {
        guard let p = byName[name] else { throw AdapterError.format("\(origin): missing '\(name)'") }
        return p.tensor
    }
    /// `["config": {...}]`, as a checkpoint's metadata.
    public var metadata: [String: MetadataValue] {
        var d: [String: MetadataValue] = [:]
        for (k, v) in config {
            switch v {
            case .bool(let b): d[k] = .bool(b)
            case .int(let i): d[k] = .int(i)
            case .double(let x): d[k] = .double(x)
            case .string(let s): d[k] = .string(s)
            default: break
            }
        }
        return ["config": .dict(d)]
    }

    /// The adapter bound to views of the current values (new_gate is read by value, so bind again after a step).
    public func adapterWeights(model c: LlamaConfig) throws -> AdapterWeights {
        try AdapterWeights.bind(self, path: origin, model: c)
    }

    /// Parameters in `group`.
    public func members(of group: Int) -> [Parameter] { parameters.filter { $0.group == group } }

    /// Number of trained values.
    public var trainableCount: Int { parameters.reduce(0) { $0 + ($1.group != nil ? $1.count : 0) } }

    /// Zeroes every gradient and clears the touched marks.
    public func zeroGrad() { parameters.forEach { $0.zeroGrad() } }
}
