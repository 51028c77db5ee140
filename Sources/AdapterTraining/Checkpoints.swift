// What a run writes: the adapter in the official extract format (util/extract_adapter_from_checkpoint.py:
// `{'model': {...}, 'config': {'w_bias', 'w_lora', 'lora_rank', ...}}`, trained tensors f32, frozen ones in
// their dtype) or as safetensors, and the training state that `--resume` continues from bit for bit.
import Foundation
import AdapterCore
import AdapterFormats
import AdapterModel

/// File format of a written adapter.
public enum AdapterFileFormat: String, Sendable, CaseIterable {
    /// `torch.save` zip, loadable by the official code (`--format pytorch`, default).
    case pytorch
    /// safetensors, with the config as JSON in `__metadata__["config"]`.
    case safetensors
}

extension ParameterStore {
    /// Sort key reproducing the official extract list order: visual blocks, then per llama layer, then the
    /// projections and norms, then `llama.norm`, `visual_query`, `adapter_query`.
    static func officialOrder(_ name: String) -> (Int, Int, Int, String) {
        let layerKeys = ["attention.gate", "attention.wq.bias", "attention.wo.bias", "feed_forward.w1.bias", "feed_forward.w2.bias",
                         "feed_forward.w3.bias", "attention_norm.weight", "ffn_norm.weight", "attention.lora_wk_l1.weight",
                         "attention.lora_wk_l2.weight", "attention.lora_wo_l1.weight", "attention.lora_wo_l2.weight",
                         "feed_forward.lora_w1_l1.weight", "feed_forward.lora_w1_l2.weight", "feed_forward.lora_w2_l1.weight",
                         "feed_forward.lora_w2_l2.weight", "feed_forward.lora_w3_l1.weight", "feed_forward.lora_w3_l2.weight",
                         "attention.lora_wq_l1.weight", "attention.lora_wq_l2.weight", "attention.lora_wv_l1.weight",
                         "attention.lora_wv_l2.weight", "attention.new_gate"]
        let blockKeys = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
                         "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]
        let tail = ["clip_proj_norm.weight", "clip_proj_norm.bias", "visual_proj_norm.weight", "visual_proj_norm.bias",
                    "visual_proj.weight", "visual_proj.bias", "clip_proj.weight", "clip_proj.bias", "llama.norm.weight",
                    "visual_query.weight", "adapter_query.weight"]
        func split(_ prefix: String) -> (Int, String)? {
            guard name.hasPrefix(prefix) else { return nil }
            let rest = name.dropFirst(prefix.count)
            guard let dot = rest.firstIndex(of: "."), let i = Int(rest[..<dot]) else { return nil }
            return (i, String(rest[rest.index(after: dot)...]))
        }
        if let (i, key) = split("visual_blocks.") { return (0, i, blockKeys.firstIndex(of: key) ?? 99, key) }
        if let (i, key) = split("llama.layers.") { return (1, i, layerKeys.firstIndex(of: key) ?? 99, key) }
        if let t = tail.firstIndex(of: name) { return (2, t, 0, name) }
        return (3, 0, 0, name)
    }

    /// The tensor as saved: f32 when trained (the official `para.data.float()`), else its original dtype.
    func savedTensor(_ p: Parameter) throws -> Tensor {
        if p.group != nil || p.frozenDType == .f32 { return p.tensor }
        let t = Tensor(uninitialized: p.shape, dtype: p.frozenDType)
        try quantize(dtype: p.frozenDType, src: p.values, dst: t.mutableData, count: p.count)
        return t
    }

    /// Writes the adapter to `path` atomically (temporary file, fsync, rename).
    public func write(to path: String, format: AdapterFileFormat) throws {
        let ordered = parameters.sorted { Self.officialOrder($0.name) < Self.officialOrder($1.name) }
        let tensors = try ordered.map { ($0.name, try savedTensor($0)) }
        switch format {
        case .pytorch:
            try TorchCheckpointWriter.write([("model", .dict(tensors.map { ($0.0, .tensor($0.1)) })), ("config", .dict(config))], to: path)
        case .safetensors:
            try SafetensorsWriter.write(tensors, metadata: ["config": configJSON, "format": "pt"], to: path)
        }
    }

    /// The config dict as JSON (safetensors metadata holds strings only).
    var configJSON: String {
        let items = config.compactMap { (k, v) -> String? in
            let key = SafetensorsWriter.json(k)
            switch v {
            case .bool(let b): return "\(key): \(b)"
            case .int(let i): return "\(key): \(i)"
            case .double(let d): return d.isFinite ? "\(key): \(d)" : nil
            case .string(let s): return "\(key): \(SafetensorsWriter.json(s))"
            default: return nil
            }
        }
        return "{" + items.joined(separator: ", ") + "}"
    }
}

// MARK: - Training state

extension Trainer {
    /// What must match between the run that saved a state and the run that resumes it.
    public var fingerprint: String {
        let o = options
        return (["phase=\(o.phase.rawValue)", "batch=\(o.batchSize)", "steps=\(o.steps)", "lr=\(o.lr)", "min_lr=\(o.minLR)",
                "wd=\(o.weightDecay)", "warmup=\(o.warmupSteps)", "accum=\(o.accumSteps)", "max_words=\(o.maxWords)",
                "shuffle=\(o.shuffle)", "augment=\(o.augment)", "seed=\(o.seed)", "compat=\(o.compat.rawValue)",
                "clip=\(o.clipGrad.map { "\($0)" } ?? "none")", "channels=\(o.channels.rawValue)",
                "ratio=\(o.jointRatio.caption):\(o.jointRatio.instruction)", "early=\(o.earlyLayers.map(String.init) ?? "auto")",
                "data=\(data?.samples.count ?? 0)", "captions=\(captionData?.samples.count ?? 0)",
                "params=\(store.parameters.count):\(store.trainableCount)"]
            + (o.gateLRScale != 1 ? ["gate_lr=\(o.gateLRScale)"] : [])).joined(separator: " ")
    }

    /// Saves parameters, AdamW moments and steps, the step counter, data positions and
    /// the step history to `path`, atomically (a `torch.save` file: `torch.load` reads it too).
    public func saveState(to path: String, history: [StepReport]) throws {
        let names = store.parameters.map(\.name)
        var adamSteps: [(String, PickleWriteValue)] = []
        var m: [(String, PickleWriteValue)] = [], v: [(String, PickleWriteValue)] = []
        for p in store.parameters {
            guard let s = adam[p.name] else { continue }
            adamSteps.append((p.name, .int(s.step)))
            let a = Tensor(zeros: p.shape), b = Tensor(zeros: p.shape)
            a.floats.update(from: s.expAvg, count: p.count)
            b.floats.update(from: s.expAvgSq, count: p.count)
            m.append((p.name, .tensor(a))); v.append((p.name, .tensor(b)))
        }
        let hist: [PickleWriteValue] = history.map {
            .list([.int($0.step), .double($0.loss), .double($0.gradNorm), .double($0.lr), .int($0.group?.rawValue ?? -1)])
        }
        let root: [(String, PickleWriteValue)] = [
            ("format", .string("llama-adapter-swift training state 2")),
            ("fingerprint", .string(fingerprint)),
            ("step", .int(step)),
            ("cursors", .list(cursors.flatMap { [PickleWriteValue.int($0.epoch), .int($0.index)] })),
            ("adam_step", .dict(adamSteps)),
            ("history", .list(hist)),
            ("config", .dict(store.config)),
            ("params", .dict(names.map { n in (n, .tensor(store[n]!.tensor)) })),
            ("exp_avg", .dict(m)),
            ("exp_avg_sq", .dict(v)),
        ]
        try TorchCheckpointWriter.write(root, to: path)
    }

    /// Restores a state written by `saveState`; returns the step history it holds. The run's settings and
    /// data must be the ones the state was saved with.
    public func loadState(from path: String) throws -> [StepReport] {
        guard try FileFormat.detect(path: path) == .pytorch else { throw AdapterError.format("\(path) is not a training state file") }
        let root = try TorchCheckpoint.load(path: path, options: .checkpoint)
        let top = try TorchCheckpoint(root: root, keyPath: [], path: path)
        if top.metadata["format"]?.stringValue == "llama-adapter-swift training state 1" {
            // Format 1 kept one augmentation stream for the whole run; augmentation is now drawn per sample.
            throw AdapterError.format("\(path) was written by an older llama-adapter (training state format 1), whose augmentation draws this version does not reproduce: start the run again")
        }
        guard top.metadata["format"]?.stringValue == "llama-adapter-swift training state 2" else {
            throw AdapterError.format("\(path) is not a llama-adapter training state (written by finetune --state)")
        }
        guard let fp = top.metadata["fingerprint"]?.stringValue else { throw AdapterError.format("\(path): no fingerprint") }
        guard fp == fingerprint else {
            throw AdapterError.invalidArgument("\(path) was saved by a run with other settings or data (saved: \(fp); now: \(fingerprint))")
        }
        guard let k = top.metadata["step"]?.intValue, k >= 0, k <= options.steps,
              let cur = top.metadata["cursors"]?.arrayValue?.compactMap(\.intValue), cur.count == 4,
              let adamSteps = top.metadata["adam_step"]?.dictValue else {
            throw AdapterError.format("\(path): training state is incomplete")
        }
        let params = try TorchCheckpoint(root: root, keyPath: ["params"], path: path)
        let m = try TorchCheckpoint(root: root, keyPath: ["exp_avg"], path: path)
        let v = try TorchCheckpoint(root: root, keyPath: ["exp_avg_sq"], path: path)
        for p in store.parameters {
            let t = try params.tensor(p.name)
            guard t.shape == p.shape, t.dtype == .f32 else { throw AdapterError.shape("\(path): '\(p.name)' has shape \(t.shape), the run \(p.shape)") }
            p.values.update(from: t.floats, count: p.count)
            if let s = adam[p.name] {
                let a = try m.tensor(p.name), b = try v.tensor(p.name)
                guard a.shape == p.shape, b.shape == p.shape, let n = adamSteps[p.name]?.intValue else {
                    throw AdapterError.format("\(path): optimizer state of '\(p.name)' is missing or has another shape")
                }
                s.expAvg.update(from: a.floats, count: p.count)
                s.expAvgSq.update(from: b.floats, count: p.count)
                s.step = n
            }
        }
        step = k
        cursors = [DataCursor(epoch: cur[0], index: cur[1]), DataCursor(epoch: cur[2], index: cur[3])]
        return (top.metadata["history"]?.arrayValue ?? []).compactMap { e in
            guard let a = e.arrayValue, a.count == 5, let s = a[0].intValue, let l = a[1].doubleValue, let g = a[2].doubleValue,
                  let r = a[3].doubleValue, let grp = a[4].intValue else { return nil }
            return StepReport(step: s, loss: l, gradNorm: g, lr: r, group: TrainingGroup(rawValue: grp), tokens: 0, seconds: 0)
        }
    }
}
