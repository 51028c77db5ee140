// The training loop: phases and joint training, batches, accumulation, global-norm clipping, AdamW per
// parameter group, the loss of the official LLaMA_adapter.forward (shifted cross-entropy, ignore index 0,
// mean over the labelled tokens of the batch).
import Foundation
import AdapterCore
import AdapterFormats
import AdapterModel
import AdapterTokenizers
import AdapterVision

/// Which parameters a run trains (official `get_trainable_params`, plus the paper's joint training).
public enum TrainingPhase: String, Sendable, CaseIterable {
    /// `gate`, `clip_proj(_norm)`, `visual_query`, `visual_blocks`, `visual_proj(_norm)`, `adapter_query`.
    case pretrain
    /// LLaMA parameters whose name contains `norm` or `bias` (and, unless `--compat official`, Eq. 1 scales and LoRA).
    case finetune
    /// Paper section 3.2: caption batches train the visual path and the early-fusion gates; instruction
    /// batches train the late prompts and gates, norms, biases, scales and LoRA. Disjoint groups, early fusion.
    case joint
}

/// Parameter groups of a joint run.
public enum TrainingGroup: Int, Sendable, CaseIterable {
    /// Caption data: visual projection path and early gates (the only group of `pretrain`/`finetune` runs is `.caption` = 0).
    case caption = 0
    /// Instruction data.
    case instruction = 1

    /// Name in logs.
    public var name: String { self == .caption ? "caption" : "instruction" }
}

/// Everything a run is configured with (the `finetune` flags).
public struct TrainingOptions: Sendable, Equatable {
    /// Which parameters train (`--phase`).
    public var phase: TrainingPhase = .finetune
    /// Samples per micro-batch (`--batch-size`).
    public var batchSize = 4
    /// Optimizer steps of the whole run (`--steps`).
    public var steps = 100
    /// Peak learning rate (`--lr`).
    public var lr = 1e-3
    /// End of the cosine (`--min-lr`).
    public var minLR = 0.0
    /// AdamW weight decay for matrices (`--weight-decay`).
    public var weightDecay = 0.05
    /// Linear warm-up steps (`--warmup-steps`).
    public var warmupSteps = 0
    /// Micro-batches per optimizer step (`--accum-steps`).
    public var accumSteps = 1
    /// Tokens per sample after padding/truncation (`--max-words`).
    public var maxWords = 512
    /// Seeded shuffling per epoch (off: `--no-shuffle`).
    public var shuffle = true
    /// RandomResizedCrop of images (off: `--no-augment`).
    public var augment = true
    /// Seed of order, augmentation and fresh adapters (`--seed`).
    public var seed: UInt64 = 0
    /// `--compat official`: the official tuple-repr prompts, and only norms/biases in phase finetune.
    public var compat: Compatibility = .standard
    /// Global-norm clipping threshold (nil: none).
    public var clipGrad: Double?
    /// Channel order fed to CLIP (the official data sets read images with OpenCV: BGR).
    public var channels: ChannelOrder = .bgr
    /// Learning-rate multiplier of the zero-initialised gates trained with the visual path (joint runs' early-fusion
    /// gates, pretrain's gates; `--gate-lr-scale`, 1: the official single rate). With AdamW a parameter moves about
    /// `lr` per step whatever its gradient, so gates that start at 0 stay within `steps × lr`: short runs on small
    /// data need the visual prompt's gates to open faster than the matrices move. (Scaling the late adaption
    /// prompts' gates as well made joint runs diverge.)
    public var gateLRScale = 1.0
    /// Joint runs: this many caption steps, then this many instruction steps, repeated.
    public var jointRatio = (caption: 1, instruction: 1)
    /// Joint runs: early-fusion depth (default: the layers below the adaption prompts).
    public var earlyLayers: Int?
    /// `--deterministic-reduce`: gradients computed one sample at a time and summed in 64-bit fixed point, so the
    /// result is the same bit for bit for any number of ranks (and equals a one-process run with the flag).
    public var deterministicReduce = false

    /// Defaults.
    public init() {}

    /// Field-by-field equality (the tuple field keeps the synthesised one from existing).
    public static func == (a: TrainingOptions, b: TrainingOptions) -> Bool {
        a.phase == b.phase && a.batchSize == b.batchSize && a.steps == b.steps && a.lr == b.lr && a.minLR == b.minLR
            && a.weightDecay == b.weightDecay && a.warmupSteps == b.warmupSteps && a.accumSteps == b.accumSteps
            && a.maxWords == b.maxWords && a.shuffle == b.shuffle && a.augment == b.augment && a.seed == b.seed
            && a.compat == b.compat && a.clipGrad == b.clipGrad && a.channels == b.channels && a.gateLRScale == b.gateLRScale
            && a.jointRatio == b.jointRatio && a.earlyLayers == b.earlyLayers && a.deterministicReduce == b.deterministicReduce
    }
}

/// One optimizer step's report (the `--log-json` line).
public struct StepReport: Sendable {
    /// 0-based optimizer step.
    public var step: Int
    /// Mean loss over the step's labelled tokens (averaged over accumulation micro-batches), before the update.
    public var loss: Double
    /// Global L2 norm of the trained gradients before clipping.
    public var gradNorm: Double
    /// Learning rate used by this step's update.
    public var lr: Double
    /// Group the step trained (joint runs), else nil.
    public var group: TrainingGroup?
    /// Tokens run through the model (positions up to each sample's last real token).
    public var tokens: Int
    /// Wall time of the step.
    public var seconds: Double
    /// Wall time spent in the ranks' gradient allreduce (0 in one process).
    public var allreduceSeconds = 0.0
    /// Bytes this rank contributed to the step's allreduces (0 in one process).
    public var allreduceBytes = 0
}

/// Position in one data set's order: epoch and index, so a resumed run reads the same batches.
public struct DataCursor: Sendable, Equatable {
    /// Completed passes.
    public var epoch = 0
    /// Next index into this epoch's order.
    public var index = 0
}

/// A training run over one frozen base model and one adapter's parameters.
public final class Trainer {
    /// The frozen base (no adapter bound).
    public let base: LlamaModel
    /// The adapter's parameters.
    public let store: ParameterStore
    /// Settings.
    public let options: TrainingOptions
    /// Instruction (or, for `pretrain`, caption) data; in joint runs the instruction data.
    public let data: TrainingDataset?
    /// Caption data of a joint run.
    public let captionData: TrainingDataset?
    let tokenizer: (any Tokenizer)?
    let clip: (any VisionEncoder)?
    /// Encoder features per image path, kept while augmentation is off (the frozen encoder then gives the same
    /// features every epoch), up to `featureCacheBudget` bytes.
    private var featureCache: [String: Tensor] = [:]
    private var featureCacheBytes = 0
    /// Bytes of encoder features kept between steps (4 GiB: 10,000 DINOv2-S images).
    public var featureCacheBudget = 4 << 30
    /// Images encoded so far and those served from the cache (for the progress line and the measurement).
    public private(set) var imagesEncoded = 0, imagesFromCache = 0
    let map: ParameterMap
    let fusion: Fusion
    let schedule: LRSchedule
    /// AdamW state by parameter name.
    public internal(set) var adam: [String: AdamState] = [:]
    /// Next optimizer step.
    public internal(set) var step = 0
    /// Data order positions per group.
    public internal(set) var cursors: [DataCursor] = [DataCursor(), DataCursor()]
    /// The ranks this run is one of (one process unless `distribute(over:)` was called).
    public private(set) var communicator: any Communicator = LocalCommunicator()
    private var tokenCache: [Int: [Int: TokenizedSample]] = [:]
    private var zeroImageFeatures: Tensor?
    private var workspaces: [Workspace] = []
    private var states: [DecoderState] = []
    let adamConfig: AdamWConfig

    /// Sets up a run: assigns parameter groups by phase and checks that data, CLIP and adapter fit together.
    /// `tokenizer` may be nil only when batches come tokenized (`trainStep(tokenized:)`).
    public init(base: LlamaModel, store: ParameterStore, tokenizer: (any Tokenizer)?, clip: (any VisionEncoder)?,
                data: TrainingDataset?, captionData: TrainingDataset?, options o: TrainingOptions) throws {
        self.base = base
        // With --compat official, phase pretrain runs the official pretrain model, which has no biases at all.
        self.store = o.phase == .pretrain && o.compat == .official ? try store.droppingLlamaBiases() : store
        self.tokenizer = tokenizer
        self.clip = clip
        self.data = data
        self.captionData = captionData
        options = o
        guard o.batchSize >= 1, o.batchSize <= 65536 else { throw AdapterError.invalidArgument("--batch-size must be between 1 and 65536") }
        guard o.steps >= 1, o.steps <= 100_000_000 else { throw AdapterError.invalidArgument("--steps must be between 1 and 100000000") }
        guard o.accumSteps >= 1, o.accumSteps <= 65536 else { throw AdapterError.invalidArgument("--accum-steps must be between 1 and 65536") }
        guard o.maxWords >= 2, o.maxWords <= base.contextLength else {
            throw AdapterError.invalidArgument("--max-words must be between 2 and the model's context of \(base.contextLength)")
        }
        guard o.warmupSteps >= 0, o.warmupSteps <= o.steps else { throw AdapterError.invalidArgument("--warmup-steps must be between 0 and --steps") }
        guard o.lr.isFinite, o.lr >= 0, o.minLR.isFinite, o.minLR >= 0 else { throw AdapterError.invalidArgument("--lr and --min-lr must be finite and not negative") }
        guard o.weightDecay.isFinite, o.weightDecay >= 0 else { throw AdapterError.invalidArgument("--weight-decay must be finite and not negative") }
        if let c = o.clipGrad, !(c > 0 && c.isFinite) { throw AdapterError.invalidArgument("--clip-grad must be a positive number") }
        guard o.gateLRScale.isFinite, o.gateLRScale > 0, o.gateLRScale <= 1000 else { throw AdapterError.invalidArgument("--gate-lr-scale must be between 0 and 1000") }
        adamConfig = { var a = AdamWConfig(); a.weightDecay = Float(o.weightDecay); return a }()
        // Fixed work splits make each sample's gradient independent of the thread count as well.
        if o.deterministicReduce { base.pool.fixedChunks = Trainer.deterministicChunks }
        schedule = LRSchedule(lr: o.lr, minLR: o.minLR, warmupSteps: o.warmupSteps, steps: o.steps)
        let c = base.config
        let probe = try self.store.adapterWeights(model: c)
        map = ParameterMap(store: self.store, config: c)
        switch o.phase {
        case .joint:
            let ql = probe.config.queryLayer
            let k = o.earlyLayers ?? (c.nLayers - (probe.adapterQuery == nil ? 0 : ql))
            guard k >= 1, k + (probe.adapterQuery == nil ? 0 : ql) <= c.nLayers else {
                throw AdapterError.invalidArgument("--early-layers \(k) must be at least 1 and leave the last \(ql) layers to the adaption prompts")
            }
            guard probe.visual != nil else { throw AdapterError.invalidArgument("--phase joint needs an adapter with a visual branch (--visual or --adapter)") }
            guard captionData != nil, data != nil else { throw AdapterError.invalidArgument("--phase joint needs both --data (instructions) and --caption-data (captions)") }
            guard o.jointRatio.caption >= 1, o.jointRatio.instruction >= 1 else { throw AdapterError.invalidArgument("--joint-ratio needs two positive counts, e.g. 1:1") }
            fusion = .early(layers: k)
            // Recorded in the checkpoint, so generate, serve and eval put the visual prompt where training did.
            self.store.setConfig("early_layers", .int(k))
        default:
            fusion = .release
        }
        assignGroups(adapter: probe)
        guard self.store.trainableCount > 0 else {
            throw AdapterError.invalidArgument("phase \(o.phase.rawValue) trains nothing in this adapter (\(self.store.origin)): "
                + (o.phase == .finetune ? "it has no norms, biases, scales or LoRA" : "it has no gates, prompts or visual branch"))
        }
        for p in self.store.parameters where p.group != nil { adam[p.name] = AdamState(count: p.count) }
        if data != nil || captionData != nil, tokenizer == nil { throw AdapterError.invalidArgument("training data needs a tokenizer") }
        for ds in [data, captionData].compactMap({ $0 }) {
            guard ds.samples.count >= o.batchSize else {
                throw AdapterError.invalidArgument("\(ds.path) has \(ds.samples.count) records, fewer than --batch-size \(o.batchSize)")
            }
            if ds.samples.contains(where: { $0.imagePath != nil }) {
                guard probe.visual != nil else { throw AdapterError.invalidArgument("\(ds.path) has image records but the adapter has no visual branch (add --visual)") }
            }
            // Missing images are found now, not hours into a run.
            for (i, s) in ds.samples.enumerated() {
                if let p = s.imagePath, !FileManager.default.fileExists(atPath: p) {
                    throw AdapterError.io("\(ds.path): record \(i + 1): image \(p) does not exist")
                }
            }
        }
        if probe.visual != nil, clip == nil { throw AdapterError.invalidArgument("the adapter has a visual branch: pass --clip") }
        if let clip, let v = probe.visual, v.clipProjWeight.shape[1] != clip.outputDim {
            throw AdapterError.shape("clip_proj expects features of width \(v.clipProjWeight.shape[1]) but the vision encoder gives \(clip.outputDim)")
        }
    }

    private func assignGroups(adapter a: AdapterWeights) {
        let c = base.config
        let n = c.nLayers
        func layerIndex(_ name: String) -> Int? {
            guard let r = name.range(of: "layers.") else { return nil }
            return Int(name[r.upperBound...].prefix { $0.isNumber })
        }
        let visualNames = ["clip_proj", "clip_proj_norm", "visual_query", "visual_blocks", "visual_proj", "visual_proj_norm"]
        for p in store.parameters {
            let name = p.name
            let isLlama = name.hasPrefix("llama.") || name.hasPrefix("layers.") || name == "norm.weight"
            let extra = name.hasSuffix(".scale") || name.hasSuffix("_scale") || name.contains("lora_")
            switch options.phase {
            case .finetune:
                if isLlama && (name.contains("norm") || name.contains("bias") || (options.compat == .standard && extra)) { p.makeTrainable(group: 0) }
            case .pretrain:
                if (["gate", "adapter_query"] + visualNames).contains(where: { name.contains($0) }) { p.makeTrainable(group: 0) }
            case .joint:
                guard case .early(let k) = fusion else { continue }
                if visualNames.contains(where: { name.hasPrefix($0) }) {
                    p.makeTrainable(group: TrainingGroup.caption.rawValue)
                } else if name.hasSuffix("attention.gate") || name.hasSuffix("attention.new_gate"), let l = layerIndex(name) {
                    if l < k { p.makeTrainable(group: TrainingGroup.caption.rawValue) }
                    else if a.adapterQuery != nil, l >= n - a.config.queryLayer { p.makeTrainable(group: TrainingGroup.instruction.rawValue) }
                } else if name == "adapter_query.weight" || (isLlama && (name.contains("norm") || name.contains("bias") || extra)) {
                    p.makeTrainable(group: TrainingGroup.instruction.rawValue)
                }
            }
        }
    }

    /// The group optimizer step `k` trains.
    public func group(at k: Int) -> TrainingGroup {
        guard options.phase == .joint else { return .caption }
        let period = options.jointRatio.caption + options.jointRatio.instruction
        return k % period < options.jointRatio.caption ? .caption : .instruction
    }

    private func dataset(for g: TrainingGroup) -> TrainingDataset {
        options.phase == .joint && g == .caption ? captionData! : data!
    }

    /// The next `batchSize` sample indices of group `g`'s data (drop-last epochs, seeded order per epoch).
    private func nextBatch(_ g: TrainingGroup) -> [Int] {
        let ds = dataset(for: g)
        var cur = cursors[g.rawValue]
        if cur.index + options.batchSize > ds.samples.count { cur.epoch += 1; cur.index = 0 }
        let order: [Int]
        if options.shuffle {
            var rng = TrainingRNG(seed: options.seed &+ UInt64(cur.epoch) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(g.rawValue))
            order = rng.permutation(ds.samples.count)
        } else {
            order = Array(0..<ds.samples.count)
        }
        let batch = Array(order[cur.index..<(cur.index + options.batchSize)])
        cur.index += options.batchSize
        cursors[g.rawValue] = cur
        return batch
    }

    /// Chunks per parallel loop under `--deterministic-reduce` (enough to keep 32 threads busy).
    public static let deterministicChunks = 32

    /// Makes this trainer one rank of a data-parallel job: from now on each micro-batch is split between the
    /// ranks and gradients are summed over them. Every rank must be set up with the same data and options.
    public func distribute(over c: any Communicator) throws {
        guard c.size <= options.batchSize else {
            throw AdapterError.invalidArgument("--batch-size \(options.batchSize) is smaller than the \(c.size) ranks: each rank needs at least one sample of every micro-batch")
        }
        communicator = c
    }

    /// Rank `rank`'s slice of a micro-batch of `n` samples (contiguous; sizes differ by at most one).
    public static func shard(_ n: Int, rank: Int, size: Int) -> Range<Int> { (rank * n / size)..<((rank + 1) * n / size) }

    /// The augmentation random numbers of one sample: a function of the seed and the sample's place in the run
    /// (step, micro-batch, slot), so any rank that processes it draws the same crop.
    func augmentSeed(step k: Int, micro a: Int, slot i: Int) -> UInt64 {
        var r = TrainingRNG(seed: options.seed ^ 0xA116_7E00_0000_0001)
        r.state &+= UInt64(truncatingIfNeeded: k) &* 0xD1B5_4A32_D192_ED03
        _ = r.next()
        r.state &+= UInt64(truncatingIfNeeded: a) &* 0x8CB9_2BA7_2F3D_8DD7 &+ UInt64(truncatingIfNeeded: i) &* 0x9E37_79B9_7F4A_7C15
        return r.next()
    }

    private func tokenized(_ g: TrainingGroup, _ i: Int) -> TokenizedSample {
        if let t = tokenCache[g.rawValue]?[i] { return t }
        let t = tokenizeSample(dataset(for: g).samples[i], tokenizer: tokenizer!, maxWords: options.maxWords, compat: options.compat)
        tokenCache[g.rawValue, default: [:]][i] = t
        return t
    }

    /// CLIP features of a sample's image (augmented unless `--no-augment`), or of the all-zero image the
    /// official data set feeds text-only samples.
    private func clipFeatures(_ sample: TrainingSample?, augmentSeed: UInt64) throws -> Tensor {
        guard let clip else { throw AdapterError.invalidArgument("the adapter has a visual branch: pass --clip") }
        guard let path = sample?.imagePath else {
            if let z = zeroImageFeatures { return z }
            let z = try clip.encode(clip.blankPixels(), pool: base.pool)
            zeroImageFeatures = z
            return z
        }
        if !options.augment, let cached = featureCache[path] {
            imagesFromCache += 1
            return cached
        }
        let image = try ImageDecoder.decode(path: path)
        let pre = clip.preprocessor.with(channels: options.channels)
        try pre.checkResizable(image)
        var rng = TrainingRNG(seed: augmentSeed)
        let crop: RGBImage
        if options.augment, let (h, w) = pre.fixedOutputSize, h == w {
            crop = randomResizedCrop(image, size: h, rng: &rng)
        } else {
            crop = pre.resizedAndCropped(image)
        }
        let feats = try clip.encode(pre.normalize(crop), pool: base.pool)
        imagesEncoded += 1
        if !options.augment, featureCacheBytes + feats.count * 4 <= featureCacheBudget {
            featureCache[path] = feats
            featureCacheBytes += feats.count * 4
        }
        return feats
    }

    /// The mean loss of the samples `batch` (indices into group `g`'s data) at the current parameters; with
    /// `gradients`, also the gradients (zeroed first, then accumulated into the parameters' buffers), as one
    /// step computes them before its update. For checks and evaluation: no data order or optimiser state changes.
    public func evaluate(batch: [Int], group g: TrainingGroup = .caption, gradients: Bool) throws -> Double {
        store.zeroGrad()
        let slots = batch.enumerated().map { j, i in Slot(sample: dataset(for: g).samples[i], tokens: tokenized(g, i), augmentSeed: augmentSeed(step: -1, micro: 0, slot: j)) }
        let labelled = slots.reduce(0) { $0 + $1.labelled }
        let losses = try microBatch(slots, denominator: Float(max(labelled, 1)), active: [g.rawValue], backward: gradients)
        return labelled > 0 ? losses.reduce(0, +) / Double(labelled) : 0
    }

    /// Runs one optimizer step (forward, backward and AdamW over `accumSteps` micro-batches of the data) and reports it.
    public func trainStep() throws -> StepReport {
        try step { g in
            guard self.options.phase == .joint ? (g == .caption ? self.captionData : self.data) != nil : self.data != nil else {
                throw AdapterError.invalidArgument("no training data")
            }
            let batch = self.nextBatch(g)
            return batch.map { (self.dataset(for: g).samples[$0], self.tokenized(g, $0)) }
        }
    }

    /// One optimizer step on given text-only token batches (every micro-batch is `batch`): for benchmarks and
    /// callers with their own data pipeline.
    public func trainStep(tokenized batch: [TokenizedSample]) throws -> StepReport {
        try step { _ in batch.map { (nil, $0) } }
    }

    private func step(batches next: (TrainingGroup) throws -> [(TrainingSample?, TokenizedSample)]) throws -> StepReport {
        let started = Date()
        let k = step
        let g = group(at: k)
        let active: Set<Int> = [g.rawValue]
        let lr = schedule.rate(at: k)
        let comm = communicator
        let B = options.batchSize, A = options.accumSteps
        let mine = Trainer.shard(B, rank: comm.rank, size: comm.size)
        let members = store.members(of: g.rawValue)
        store.zeroGrad()
        // Every rank reads the whole global micro-batch (the same indices everywhere), counts its labels for
        // the loss denominator, and runs only its own slice.
        var sampleLoss = [Double](repeating: 0, count: A * B)
        var labelledPerMicro: [Int] = []
        var tokens = 0
        var perSample: [[Float]] = []
        var touched = [Double](repeating: 0, count: members.count)
        for a in 0..<A {
            let batch = try next(g)
            let slots = batch.enumerated().map { j, e in Slot(sample: e.0, tokens: e.1, augmentSeed: augmentSeed(step: k, micro: a, slot: j)) }
            let labelled = slots.reduce(0) { $0 + $1.labelled }
            guard labelled > 0 else {
                throw AdapterError.invalidArgument("step \(k): no sample of the batch has answer tokens within --max-words \(options.maxWords) (the prompts fill it): raise --max-words")
            }
            labelledPerMicro.append(labelled)
            tokens += slots.reduce(0) { $0 + $1.tokens.length }
            let denominator = Float(labelled * A)
            if options.deterministicReduce {
                for j in mine {
                    store.zeroGrad()
                    sampleLoss[a * B + j] = try microBatch([slots[j]], denominator: denominator, active: active)[0]
                    perSample.append(flatGradients(members, touched: &touched))
                }
            } else {
                let losses = try microBatch(Array(slots[mine]), denominator: denominator, active: active)
                for (j, l) in zip(mine, losses) { sampleLoss[a * B + j] = l }
            }
        }
        var reduceSeconds = 0.0, reduceBytes = 0
        if options.deterministicReduce {
            let t0 = Date()
            try deterministicSum(members, perSample: perSample, terms: A * B)
            reduceSeconds += Date().timeIntervalSince(t0)
            reduceBytes += perSample.isEmpty ? 0 : perSample[0].count * 8
        } else if comm.size > 1 {
            var flat = flatGradients(members, touched: &touched)
            let t0 = Date()
            try comm.allreduce(&flat, element: .float, op: .sum)
            reduceSeconds += Date().timeIntervalSince(t0)
            reduceBytes += flat.count * 4
            scatterGradients(flat, members)
        }
        if comm.size > 1 || options.deterministicReduce {
            // Each slot of the per-sample losses is filled by exactly one rank (x + 0 is exact), and a parameter is
            // touched when any rank touched it.
            var meta = sampleLoss + touched
            let t0 = Date()
            try comm.allreduce(&meta, element: .double, op: .sum)
            reduceSeconds += Date().timeIntervalSince(t0)
            reduceBytes += meta.count * 8
            sampleLoss = Array(meta[0..<(A * B)])
            for (i, p) in members.enumerated() { p.touched = meta[A * B + i] > 0 }
        }
        var lossSum = 0.0
        for a in 0..<A {
            var sum = 0.0
            for j in 0..<B { sum += sampleLoss[a * B + j] }
            lossSum += sum / Double(labelledPerMicro[a])
        }
        let trained = members.filter { $0.touched }
        var sq = 0.0
        for p in trained { for i in 0..<p.count { let v = Double(p.grad![i]); sq += v * v } }
        let norm = sq.squareRoot()
        guard norm.isFinite, lossSum.isFinite else {
            throw AdapterError.invalidArgument("step \(k): loss or gradient is not finite (loss \(lossSum / Double(A))); lower --lr")
        }
        if let clip = options.clipGrad {
            let coef = Float(clip / (norm + 1e-6))
            if coef < 1 { for p in trained { for i in 0..<p.count { p.grad![i] *= coef } } }
        }
        for p in trained {
            // The gates trained with the visual path: joint runs' early-fusion gates, pretrain's gates.
            let visualGate = p.group == TrainingGroup.caption.rawValue && (p.name.hasSuffix(".gate") || p.name.hasSuffix(".new_gate"))
            adamWStep(values: p.values, grad: p.grad!, state: adam[p.name]!, lr: visualGate ? lr * options.gateLRScale : lr, weightDecay: p.decays ? Float(options.weightDecay) : 0,
                      config: adamConfig)
        }
        step += 1
        var report = StepReport(step: k, loss: lossSum / Double(A), gradNorm: norm, lr: lr,
                                group: options.phase == .joint ? g : nil, tokens: tokens, seconds: Date().timeIntervalSince(started))
        report.allreduceSeconds = reduceSeconds
        report.allreduceBytes = reduceBytes
        return report
    }

    /// The gradients of `members` in one flat buffer (marking in `touched` those a gradient reached).
    private func flatGradients(_ members: [Parameter], touched: inout [Double]) -> [Float] {
        var flat = [Float](repeating: 0, count: members.reduce(0) { $0 + $1.count })
        var o = 0
        for (i, p) in members.enumerated() {
            if p.touched { touched[i] = 1 }
            flat.withUnsafeMutableBufferPointer { $0.baseAddress!.advanced(by: o).update(from: p.grad!, count: p.count) }
            o += p.count
        }
        return flat
    }

    private func scatterGradients(_ flat: [Float], _ members: [Parameter]) {
        var o = 0
        flat.withUnsafeBufferPointer { f in
            for p in members { p.grad!.update(from: f.baseAddress! + o, count: p.count); o += p.count }
        }
    }

    /// `--deterministic-reduce`: the exact maximum of each tensor over all samples of all ranks fixes a
    /// fixed-point scale, every rank adds its samples' gradients as integers, and one integer allreduce sums them.
    private func deterministicSum(_ members: [Parameter], perSample: [[Float]], terms: Int) throws {
        let counts = members.map(\.count)
        var maxima = [Float](repeating: 0, count: members.count)
        var o = 0
        for (t, c) in counts.enumerated() {
            for g in perSample { for i in o..<(o + c) { maxima[t] = max(maxima[t], abs(g[i])) } }
            o += c
        }
        try communicator.allreduce(&maxima, element: .float, op: .max)
        let fixed = FixedPointSum(counts: counts, maxima: maxima, terms: terms)
        var acc = [Int64](repeating: 0, count: fixed.total)
        acc.withUnsafeMutableBufferPointer { a in
            for g in perSample { g.withUnsafeBufferPointer { fixed.add($0.baseAddress!, into: a.baseAddress!) } }
        }
        try communicator.allreduce(&acc, element: .int64, op: .sum)
        var flat = [Float](repeating: 0, count: fixed.total)
        acc.withUnsafeBufferPointer { a in flat.withUnsafeMutableBufferPointer { fixed.values(a.baseAddress!, into: $0.baseAddress!) } }
        scatterGradients(flat, members)
    }

    /// One sample of a micro-batch: the record, its tokens and its augmentation seed.
    struct Slot {
        let sample: TrainingSample?
        let tokens: TokenizedSample
        let augmentSeed: UInt64
        /// Next-token labels per position (0: no loss).
        var targets: [Int] { (0..<tokens.length).map { $0 + 1 < tokens.labels.count ? tokens.labels[$0 + 1] : 0 } }
        /// Positions with a label.
        var labelled: Int { targets.reduce(0) { $0 + ($1 != 0 ? 1 : 0) } }
    }

    /// Loss and gradients of some samples of a micro-batch, the gradients accumulated with weight 1/`denominator`
    /// (the labelled positions of the whole global micro-batch times the accumulation steps). Returns each
    /// sample's summed token loss.
    func microBatch(_ samples: [Slot], denominator: Float, active: Set<Int>, backward: Bool = true) throws -> [Double] {
        let model = try base.with(adapter: store.adapterWeights(model: base.config))
        // Each position's next-token label (0: no loss), once per sample.
        let allTargets = samples.map(\.targets)
        let trainsSources = map.adapterQuery?.group.map(active.contains) ?? false
        let trainsVisual = map.visual.all.contains { $0.group.map(active.contains) ?? false }
        // Per sample: its image's visual query (recorded), prompts and state; then one packed forward for all.
        var entries: [ForwardEntry] = []
        var sequences: [LanguageBackward.Sequence] = []
        var visualRecords: [VisualRecord?] = []
        var promptLayers = [Bool](repeating: false, count: base.config.nLayers)
        for (slot, s) in samples.enumerated() {
            let tok = s.tokens
            let T = tok.length
            var vq: Tensor?
            var vrec: VisualRecord?
            if model.adapter?.visual != nil {
                let feats = try clipFeatures(s.sample, augmentSeed: s.augmentSeed)
                vrec = trainsVisual && backward ? try VisualRecord(model: model, clipTokens: feats.shape[0]) : nil
                vq = try model.visualQuery(clipFeatures: feats, record: vrec)
            }
            let prompts = try model.makePrompts(visualQuery: vq, fusion: fusion)
            let sources = model.promptSources(visualQuery: vq, fusion: fusion)
            for (l, src) in sources.enumerated() where src != nil { promptLayers[l] = true }
            let state = slotState(slot, model: model)
            state.reset()
            state.prompts = prompts
            // Positions before the first label (the prompt) need no logits: the loss never reads them.
            let from = min(allTargets[slot].firstIndex { $0 != 0 } ?? (T - 1), T - 1)
            entries.append(ForwardEntry(tokens: Array(tok.tokens.prefix(T)), state: state, logitsFrom: from))
            sequences.append(LanguageBackward.Sequence(state: state, sources: sources, logitsFrom: from))
            visualRecords.append(vrec)
        }
        let ws = packedWorkspace(model: model, prompts: entries[0].state.prompts, sequences: entries.count)
        let logits = try model.forward(batch: entries, record: ws.record)
        var losses: [Double] = []
        for ((entry, all), view) in zip(zip(entries, allTargets), logits) {
            let tg = Array(all[entry.logitsFrom!...])
            let mean = crossEntropyForwardBackward(logits: view.baseAddress!, targets: tg, V: base.config.vocabSize,
                                                   dLogits: UnsafeMutablePointer(mutating: view.baseAddress!), denominator: denominator)
            losses.append(Double(mean) * Double(tg.filter { $0 != 0 }.count))
        }
        if backward {
            let lowest = LanguageBackward.lowestTrainedLayer(params: map, active: active, promptLayers: promptLayers,
                                                             sourcesTrained: trainsSources || trainsVisual)
            let lb = LanguageBackward(model: model, params: map, active: active, lowestLayer: lowest)
            let dSources = lb.run(record: ws.record, sequences: sequences, needSourceGrad: trainsSources || trainsVisual,
                                  dLogits: logits[0].baseAddress!, scratch: ws.scratch)
            for (d, vrec) in zip(dSources, visualRecords) {
                try routeSourceGradients(d, model: model, visualRecord: vrec, active: active)
            }
        }
        withExtendedLifetime(entries) {}
        return losses
    }

    /// The packed record and backward scratch of a micro-batch (batchSize × maxWords rows), reused every step:
    /// allocating them afresh cost a sixth of a step in page clearing.
    final class Workspace {
        let record: ForwardRecord
        let scratch: BackwardScratch
        let promptLengths: [Int?]
        init(model: LlamaModel, rows: Int, maxSequence: Int, prompts: AdapterPrompts?) {
            record = ForwardRecord(model: model, T: rows, prompts: prompts, maxSequence: maxSequence)
            scratch = BackwardScratch(config: model.config, T: rows)
            promptLengths = prompts?.layers.map { $0?.length } ?? []
        }
    }

    private func packedWorkspace(model: LlamaModel, prompts: AdapterPrompts?, sequences: Int) -> Workspace {
        let lengths = prompts?.layers.map { $0?.length } ?? []
        let rows = max(options.batchSize, sequences) * options.maxWords
        if let ws = workspaces.first, ws.promptLengths == lengths, ws.record.T >= rows { return ws }
        let ws = Workspace(model: model, rows: rows, maxSequence: options.maxWords, prompts: prompts)
        workspaces = [ws]
        return ws
    }

    /// The decoder state of batch slot `slot` (KV cache for maxWords positions), reused every step.
    private func slotState(_ slot: Int, model: LlamaModel) -> DecoderState {
        if slot < states.count { return states[slot] }
        let s = DecoderState(model: model, capacity: options.maxWords, options: DecoderOptions(compat: options.compat))
        states.append(s)
        return s
    }

    /// Prompt-source gradients → adapter_query rows and the visual query (then through the visual branch).
    private func routeSourceGradients(_ dSources: [[Float]?], model: LlamaModel, visualRecord: VisualRecord?, active: Set<Int>) throws {
        guard let a = model.adapter else { return }
        let c = base.config, ql = a.config.queryLen, n = c.nLayers
        var dVQ = [Float](repeating: 0, count: ql * c.dim)
        var anyVisual = false
        let dAQ = map.adapterQuery?.gradient(active: active)
        for (l, d) in dSources.enumerated() {
            guard let d else { continue }
            let late = a.adapterQuery != nil && l >= n - a.config.queryLayer
            if late, let dAQ {
                let i = l - (n - a.config.queryLayer)
                d.withUnsafeBufferPointer { addInPlace(dAQ + i * ql * c.dim, $0.baseAddress!, ql * c.dim) }
            }
            let visualHere: Bool
            switch fusion {
            case .release: visualHere = late && visualRecord != nil
            case .early(let k): visualHere = l < k
            }
            if visualHere {
                anyVisual = true
                for j in 0..<d.count { dVQ[j] += d[j] }
            }
        }
        if anyVisual, let visualRecord {
            dVQ.withUnsafeBufferPointer { visualBackward(model: model, record: visualRecord, dQuery: $0.baseAddress!, params: map.visual, active: active) }
        }
    }
}
