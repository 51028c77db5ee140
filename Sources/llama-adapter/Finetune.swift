import ArgumentParser
import Foundation
import LlamaAdapter

extension TrainingPhase: ExpressibleByArgument {}
extension AdapterFileFormat: ExpressibleByArgument {}

/// `finetune`: parameter-efficient training of a LLaMA-Adapter V2 adapter on a frozen base (DESIGN.md section 3).
struct Finetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train an adapter (biases, scales, norms, gated prompts, LoRA, visual branch) on a frozen model.",
        discussion: """
        Phases: pretrain and finetune choose parameters as the official get_trainable_params; joint trains two \
        disjoint groups, caption batches (--caption-data) the visual path and early gates, instruction batches \
        (--data) the late prompts, gates, norms, biases, scales and LoRA. Without --adapter, --bias, --lora-rank, \
        --query-layer/--query-len and --visual create a new adapter, zero-initialised so training starts at the base model.
        """)

    @OptionGroup var model: ModelOptions

    @Option(name: [.customLong("clip"), .customLong("vision")],
            help: "Vision encoder of the visual branch: OpenAI CLIP .pt, or a CLIP, DINOv2 or SigLIP folder (clip_proj is sized from its width).")
    var clip: String?

    @Option(help: "Adapter to start from (official .pth or .safetensors); without it the flags below make a new one.")
    var adapter: String?

    @Option(help: "pretrain | finetune | joint.")
    var phase: TrainingPhase = .finetune

    @Option(help: "Training data: instruction JSON/JSONL (instruction, input, output), image conversations (image, conversations), or a caption TSV (url, caption).")
    var data: String?

    @Option(name: .customLong("caption-data"), help: "Caption TSV (url, caption) for --phase joint.")
    var captionData: String?

    @Option(name: .customLong("batch-size"), help: "Samples per micro-batch.")
    var batchSize: Int = 4

    @Option(help: "Optimizer steps in total (a resumed run still counts from the start).")
    var steps: Int

    @Option(help: "Peak learning rate.")
    var lr: Double = 1e-3

    @Option(name: .customLong("min-lr"), help: "Learning rate at the end of the cosine.")
    var minLR: Double = 0

    @Option(name: .customLong("weight-decay"), help: "AdamW weight decay (not applied to biases and 1-D tensors).")
    var weightDecay: Double = 0.05

    @Option(name: .customLong("warmup-steps"), help: "Linear warm-up steps.")
    var warmupSteps: Int = 0

    @Option(name: .customLong("accum-steps"), help: "Micro-batches per optimizer step.")
    var accumSteps: Int = 1

    @Option(name: .customLong("clip-grad"), help: "Clip the global gradient norm to this value (default: no clipping, as the official runs).")
    var clipGrad: Double?

    @Option(name: .customLong("max-words"), help: "Tokens per sample: longer ones are cut, shorter ones padded (official max_words).")
    var maxWords: Int = 512

    @Flag(name: .customLong("no-shuffle"), help: "Read the data in file order.")
    var noShuffle = false

    @Flag(name: .customLong("no-augment"), help: "No RandomResizedCrop: images get the inference transform.")
    var noAugment = false

    @Option(help: "Seed of data order, augmentation and new adapters.")
    var seed: UInt64 = 0

    @Option(help: "Channel order fed to the encoder (default: bgr for CLIP, as the official data sets read images with OpenCV; rgb for DINOv2 and SigLIP).")
    var channels: ChannelOrder?

    @Option(name: .customLong("gate-lr-scale"), help: "Learning-rate multiplier of the gates that carry the visual prompt (joint: the early-fusion gates; pretrain: all). Default 1, as the official runs; short runs see sooner with 10.")
    var gateLRScale: Double = 1

    @Option(name: .customLong("joint-ratio"), help: "Joint runs: caption steps to instruction steps, e.g. 1:1 or 1:3.")
    var jointRatio: String = "1:1"

    @Option(name: .customLong("early-layers"), help: "Joint runs: layers that take the visual prompt (default: those below the adaption prompts).")
    var earlyLayers: Int?

    @Flag(help: "New adapter: Eq. 1 bias and scale on every linear layer (biases on wq, wo, w1, w2, w3).")
    var bias = false

    @Option(name: .customLong("lora-rank"), help: "New adapter: LoRA of this rank on every linear layer.")
    var loraRank: Int?

    @Option(name: .customLong("query-layer"), help: "New adapter: adaption prompts in the last L layers.")
    var queryLayer: Int?

    @Option(name: .customLong("query-len"), help: "New adapter: prompt tokens per layer (and visual query tokens).")
    var queryLen: Int = 10

    @Flag(help: "New adapter: the visual branch (clip_proj, visual_query, visual_blocks, visual_proj) with the official shapes.")
    var visual = false

    @Option(name: .customLong("v-depth"), help: "New adapter: visual blocks.")
    var vDepth: Int = 8

    @Option(name: .customLong("v-embed-dim"), help: "New adapter: visual block width.")
    var vEmbedDim: Int = 768

    @Option(name: [.customLong("v-num-heads"), .customLong("v-heads")], help: "New adapter: visual block heads.")
    var vNumHeads: Int = 16

    @Option(help: "Where to write the trained adapter.")
    var out: String

    @Option(help: "pytorch (the official format, default) or safetensors.")
    var format: AdapterFileFormat = .pytorch

    @Option(help: "Training state file (parameters, AdamW moments, step, data position, RNG), written atomically.")
    var state: String?

    @Option(name: .customLong("save-every"), help: "Write --state every N optimizer steps (and at the end).")
    var saveEvery: Int = 50

    @Option(help: "Continue from this training state (the run's flags and data must be the same).")
    var resume: String?

    @Option(name: .customLong("stop-after"), help: "Stop this sitting after N optimizer steps (saving --state); --resume continues.")
    var stopAfter: Int?

    @Flag(name: .customLong("log-json"), help: "One JSON line per optimizer step on stdout: step, loss, grad_norm, lr.")
    var logJSON = false

    @Option(help: "Write the loss curve (and learning rate) to this SVG file.")
    var plot: String?

    @Option(name: .customLong("max-image-pixels"), help: "Largest training image accepted, in pixels (default 8192x8192).")
    var maxImagePixels: Int?

    @Flag(name: .customLong("deterministic-reduce"), help: "Sum gradients one sample at a time in 64-bit fixed point: the same result bit for bit on any number of MPI ranks.")
    var deterministicReduce = false

    @Option(name: .customLong("mpi-timeout"), help: "Under mpirun: seconds a rank waits for the others at the gradient allreduce before it stops the job (0: no limit).")
    var mpiTimeout: Double = 1800

    @Option(name: .customLong("bucket-mb"), help: "Under mpirun: size of one allreduce bucket in MB (all buckets of a step are in flight together).")
    var bucketMB: Double = 25

    func validate() throws {
        if captionData != nil, phase != .joint { throw ValidationError("--caption-data is for --phase joint (with --phase pretrain, pass captions as --data)") }
        if let stopAfter, stopAfter < 1 { throw ValidationError("--stop-after must be at least 1") }
        if stopAfter != nil, state == nil, resume == nil { throw ValidationError("--stop-after needs --state (or --resume) to save where it stopped") }
        guard saveEvery >= 1 else { throw ValidationError("--save-every must be at least 1") }
        guard maxWords >= 2, maxWords <= 32768 else { throw ValidationError("--max-words must be between 2 and 32768") }
        guard vDepth >= 0, vDepth <= 64, vEmbedDim >= 1, vEmbedDim <= 16384, vNumHeads >= 1, vNumHeads <= 1024 else {
            throw ValidationError("--v-depth must be 0...64, --v-embed-dim 1...16384, --v-num-heads 1...1024")
        }
        guard mpiTimeout >= 0, mpiTimeout.isFinite, bucketMB > 0, bucketMB <= 4096 else {
            throw ValidationError("--mpi-timeout must be a number of seconds (0: none) and --bucket-mb between 0 and 4096")
        }
        if adapter != nil, bias || loraRank != nil || queryLayer != nil || visual {
            throw ValidationError("--adapter starts from an existing adapter; --bias, --lora-rank, --query-layer and --visual create a new one: use one or the other")
        }
    }

    func run() throws {
        guard data != nil else { throw AdapterError.invalidArgument("--data is required") }
        try applyImagePixelLimit(maxImagePixels)
        for target in [out, state, plot].compactMap({ $0 }) { try AtomicFile.checkTarget(target) }
        // Under mpirun every rank runs this same command; rank 0 alone logs and writes files.
        let mpi = try startMPIRank(timeout: mpiTimeout, bucketMB: bucketMB)
        defer { mpi?.finish() }
        if mpi == nil {
            installTerminationNote(state ?? resume != nil ? "interrupted; the last saved --state is intact (continue with --resume)" : "interrupted")
        }
        let root = (mpi?.rank ?? 0) == 0
        let container = try ModelContainer.load(ModelConfiguration(
            model: model.model, tokenizer: model.tokenizer, maxSeqLen: model.maxSeqLen ?? max(maxWords, 512), quantize: model.quantize,
            panels: .none))
        let base = container.model
        let clipWeights = try clip.map { try loadVisionEncoder(path: $0) }
        var o = TrainingOptions()
        o.phase = phase; o.batchSize = batchSize; o.steps = steps; o.lr = lr; o.minLR = minLR
        o.weightDecay = weightDecay; o.warmupSteps = warmupSteps; o.accumSteps = accumSteps; o.maxWords = maxWords
        o.shuffle = !noShuffle; o.augment = !noAugment; o.seed = seed; o.compat = model.compat; o.clipGrad = clipGrad
        o.channels = channels ?? clipWeights?.defaultChannels ?? .bgr; o.earlyLayers = earlyLayers; o.deterministicReduce = deterministicReduce
        o.gateLRScale = gateLRScale
        let ratio = jointRatio.split(separator: ":").compactMap { Int($0) }
        guard ratio.count == 2 else { throw AdapterError.invalidArgument("--joint-ratio must look like 1:1") }
        o.jointRatio = (ratio[0], ratio[1])
        let store: ParameterStore
        if let adapter {
            store = try ParameterStore.load(path: adapter)
        } else {
            var spec = AdapterSpec()
            spec.bias = bias; spec.loraRank = loraRank; spec.queryLayer = queryLayer ?? 0; spec.queryLen = queryLen
            spec.visual = visual; spec.vDepth = vDepth; spec.vEmbedDim = vEmbedDim; spec.vNumHeads = vNumHeads
            store = try ParameterStore.fresh(spec, model: base, clipDim: clipWeights?.outputDim, seed: seed)
        }
        let trainer = try Trainer(base: base, store: store, tokenizer: container.tokenizer, clip: clipWeights,
                                  data: try data.map { try TrainingDataset.load(path: $0) },
                                  captionData: try captionData.map { try TrainingDataset.load(path: $0) }, options: o)
        if let mpi { try trainer.distribute(over: mpi) }
        let ranks = mpi?.size ?? 1
        var history: [StepReport] = []
        if let resume { history = try trainer.loadState(from: resume) }
        let statePath = root ? state ?? resume : nil
        let logJSON = self.logJSON && root
        // Human-readable lines on stderr: rank 0 only, and not when stdout carries JSON.
        let quiet = self.logJSON || !root
        let progress = isatty(2) != 0 && !quiet
        let started = Date()
        let firstStep = trainer.step
        var tokensRun = 0
        if !quiet {
            var line = "training \(trainer.store.trainableCount) of \(trainer.store.parameters.reduce(0) { $0 + $1.count }) adapter values (\(phase.rawValue)), steps \(trainer.step)..<\(steps)"
            if ranks > 1 {
                let perStep = trainer.store.trainableCount * (deterministicReduce ? 8 : 4)
                line += " on \(ranks) ranks (allreduce \(String(format: "%.2f", Double(perStep) / 1e6)) MB of gradients per step)"
            }
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        while trainer.step < steps {
            let r = try trainer.trainStep()
            history.append(r)
            tokensRun += r.tokens
            if logJSON {
                var line = "{\"step\": \(r.step), \"loss\": \(jsonNumber(r.loss)), \"grad_norm\": \(jsonNumber(r.gradNorm)), \"lr\": \(jsonNumber(r.lr))"
                if let g = r.group { line += ", \"group\": \"\(g.name)\"" }
                line += ", \"tokens\": \(r.tokens)"
                if ranks > 1 { line += ", \"ranks\": \(ranks), \"allreduce_bytes\": \(r.allreduceBytes), \"allreduce_seconds\": \(jsonNumber(r.allreduceSeconds))" }
                line += ", \"seconds\": \(jsonNumber(r.seconds))}"
                print(line)
                fflush(stdout)
            } else if progress {
                let elapsed = Date().timeIntervalSince(started)
                let done = Double(trainer.step - firstStep)
                let left = elapsed / max(done, 1) * Double(steps - trainer.step)
                FileHandle.standardError.write(Data(String(format: "\rstep %d/%d  loss %.4f  %.0f tok/s  ETA %@   ", trainer.step, steps, r.loss,
                                                           Double(tokensRun) / max(elapsed, 1e-9), formatDuration(left)).utf8))
            }
            let stopping = stopAfter.map { trainer.step - firstStep >= $0 } ?? false
            if let statePath, trainer.step % saveEvery == 0 || trainer.step == steps || stopping {
                try trainer.saveState(to: statePath, history: history)
            }
            if stopping && trainer.step < steps {
                if progress { FileHandle.standardError.write(Data("\n".utf8)) }
                if !quiet { FileHandle.standardError.write(Data("stopped at step \(trainer.step) of \(steps); continue with --resume \(statePath!)\n".utf8)) }
                return
            }
        }
        if progress { FileHandle.standardError.write(Data("\n".utf8)) }
        guard root else { return }
        try trainer.store.write(to: out, format: format)
        if let plot { try writeLossPlot(history, to: plot) }
        if !self.logJSON, let last = history.last {
            FileHandle.standardError.write(Data("wrote \(out) (step \(trainer.step), last loss \(String(format: "%.4f", last.loss)))\n".utf8))
            if trainer.imagesEncoded + trainer.imagesFromCache > 0 {
                // The frozen encoder's saving: features reused instead of recomputed (augmentation off).
                FileHandle.standardError.write(Data("images: \(trainer.imagesEncoded) encoded, \(trainer.imagesFromCache) from the feature cache\n".utf8))
            }
        }
    }
}

/// A finite number as JSON (NaN and infinities have no JSON form: null).
func jsonNumber(_ x: Double) -> String { x.isFinite ? "\(x)" : "null" }

/// 1h02m, 3m20s, 12s.
func formatDuration(_ s: Double) -> String {
    guard s.isFinite else { return "?" }
    let t = Int(s.rounded())
    if t >= 3600 { return String(format: "%dh%02dm", t / 3600, t % 3600 / 60) }
    if t >= 60 { return String(format: "%dm%02ds", t / 60, t % 60) }
    return "\(t)s"
}

/// Under an MPI launcher: starts MPI and sets this rank up (collective timeout, bucket size, its share of the
/// host's cores, errors prefixed with the rank, a line when the launcher stops it); nil in a plain process.
/// Call before anything uses the thread pool.
func startMPIRank(timeout: Double, bucketMB: Double) throws -> MPICommunicator? {
    guard let mpi = try MPICommunicator.startIfLaunched() else { return nil }
    mpi.timeout = timeout
    mpi.bucketElements = max(1, Int(bucketMB * 1_000_000 / 4))
    errorPrefix = mpi.size > 1 ? "rank \(mpi.rank): " : ""
    installTerminationNote("rank \(mpi.rank): stopped by the MPI launcher (another rank failed or the job was cancelled; its message above says which)")
    // Ranks on one host share its cores: each gets its part, or spinning workers would fight each other.
    if mpi.localSize > 1, ProcessInfo.processInfo.environment["LLAMA_ADAPTER_THREADS"] == nil {
        let share = max(1, ProcessInfo.processInfo.processorCount / mpi.localSize)
        setenv("LLAMA_ADAPTER_THREADS", String(min(share, ProcessInfo.processInfo.activeProcessorCount)), 1)
    }
    return mpi
}

/// The line printed when the process is stopped by a signal (SIGTERM from mpirun when another rank failed,
/// SIGINT from Ctrl-C); kept as a C string so the signal handler only calls unlink(2) and write(2).
private var terminationNote: UnsafeMutablePointer<CChar>?

/// On SIGINT/SIGTERM: remove unfinished temporary files (the last saved state stays intact), say why in one
/// line, and exit 1.
func installTerminationNote(_ message: String) {
    terminationNote = strdup("error: " + message + "\n")
    for sig in [SIGINT, SIGTERM] {
        signal(sig) { _ in
            AtomicFile.removeTemporaryFiles()
            if let note = terminationNote { _ = write(2, note, strlen(note)) }
            _exit(1)
        }
    }
}
