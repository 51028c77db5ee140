import ArgumentParser
import Foundation
import LlamaAdapter

/// `llama-adapter bench`: speed and memory on synthetic weights, printed as one JSON object.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prefill and decode speed, peak memory and the memory-bandwidth bound (JSON).")

    @Option(help: "Shape with synthetic weights: tiny, smollm2, 7b (language model) or clip-l14 (image encoder).")
    var preset: String = "tiny"

    @Flag(name: .customLong("adapter-bias"), help: "Also decode with a synthetic BIAS adapter (10-token prompts in all but the first layer) and report the ratio.")
    var adapterBias = false

    @Option(help: "Repetitions of image encodes (--preset clip-l14), training steps (--train) and allreduces (the best run is reported); prefill and decode take --rounds.")
    var repeats: Int = 1

    @Flag(name: .customLong("int8-activations"), help: "Use 8-bit activations with Q4_0/Q4_1/Q8_0 weights (weights repacked at load for the integer GEMM on AVX-512 VNNI).")
    var int8Activations = false
    @Flag(name: .customLong("no-repack"), help: "Keep Q4_0/Q4_1/Q8_0 weights (and wide Q4_K/Q6_K ones) in the file's layout (f32 FMAs instead of the default mode's integer products at f32 precision). Presets re-encode on the heap, where repacked weights are held twice.")
    var noRepack = false

    @Option(help: "Benchmark a real model (official folder, Hugging Face folder or .gguf) instead of a preset.")
    var model: String?

    @Option(help: "Threads to use (default: all cores).")
    var threads: Int?

    @Option(help: "Weight dtype of a preset: f32, f16, bf16, or q4_0, q4_1, q8_0 (synthetic f16 weights quantized on load).")
    var dtype: String = "f16"

    @Option(name: .customLong("decode-batch"), parsing: .upToNextOption,
            help: "Also decode this many sequences together (one pass over the weights per step, as the server batches), e.g. --decode-batch 1 4 8.")
    var decodeBatch: [Int] = []

    @Option(name: .customLong("prompt-tokens"), parsing: .upToNextOption,
            help: "Prompt lengths for the prefill measurements (e.g. --prompt-tokens 128 512).")
    var promptTokens: [Int] = [128]

    @Option(name: .customLong("prefill-chunk"), help: "Prompt tokens per pass of a long prefill (as generate's; 0: automatic).")
    var prefillChunk: Int = 0

    @Option(name: .customLong("decode-tokens"), help: "Tokens to decode for the decode measurement (from an empty context, as llama-bench's tg test).")
    var decodeTokens: Int = 32

    @Flag(help: "Measure a training step instead: fresh bias+scale adapter, finetune phase (norms, biases, scales), AdamW.")
    var train = false

    @Option(name: .customLong("batch-size"), help: "With --train: sequences per step.")
    var batchSize: Int = 2

    @Option(name: .customLong("train-tokens"), help: "With --train: tokens per sequence (half prompt, half labelled answer).")
    var trainTokens: Int = 128

    @Option(name: .customLong("allreduce-floats"), help: "Under mpirun: time an allreduce of this many floats between the ranks (e.g. 14000000, the 7B BIAS adapter's trainable values).")
    var allreduceFloats: Int?

    @Option(name: .customLong("bucket-mb"), help: "Under mpirun: allreduce bucket size in MB, as finetune's.")
    var bucketMB: Double = 25

    @Option(name: .customLong("compare-llamacpp"),
            help: "With --model FILE.gguf: also run llama.cpp's llama-bench (a build folder, its bin/ folder or the binary) on the same file with the same threads, alternating with ours, and report both and their ratio.")
    var compareLlamacpp: String?

    @Option(help: "Measurement rounds (prefill and decode); with --compare-llamacpp each round runs ours, then llama-bench. Figures are medians.")
    var rounds: Int = 1

    struct AllreduceReport: Encodable {
        var ranks: Int
        var floats: Int
        var bytes: Int
        var ms: Double
        var ms_runs: [Double]
        var gb_per_s: Double
    }

    /// Allreduce benchmark: ms per in-place sum of `floats` values over the ranks (bus bandwidth as NCCL counts it:
    /// 2·(N−1)/N · bytes per ms).
    func runAllreduceBench(_ mpi: MPICommunicator, floats: Int) throws {
        guard floats >= 1, floats <= 1 << 31 else { throw AdapterError.invalidArgument("--allreduce-floats must be between 1 and 2147483648") }
        var buffer = [Float](repeating: Float(mpi.rank + 1), count: floats)
        try mpi.allreduce(&buffer, element: .float, op: .sum)  // warm-up: connections and pages
        var runs: [Double] = []
        for _ in 0..<max(1, repeats) {
            let t0 = Measure.now()
            try mpi.allreduce(&buffer, element: .float, op: .sum)
            runs.append((Measure.now() - t0) * 1000)
        }
        var slowest = runs
        try mpi.allreduce(&slowest, element: .double, op: .max)  // a collective ends when its slowest rank does
        guard mpi.rank == 0 else { return }
        let ms = slowest.sorted()[slowest.count / 2]
        let n = Double(mpi.size)
        try printJSON(AllreduceReport(ranks: mpi.size, floats: floats, bytes: floats * 4, ms: ms, ms_runs: slowest,
                                      gb_per_s: 2 * (n - 1) / n * Double(floats * 4) / (ms / 1000) / 1e9))
    }

    struct TrainReport: Encodable {
        var preset: String
        var model: String?
        var dtype: String
        var threads: Int
        var batch_size: Int
        var tokens_per_sequence: Int
        var trainable_parameters: Int
        var ranks: Int
        var allreduce_bytes: Int
        var allreduce_ms: Double
        var step_ms: Double
        var step_ms_runs: [Double]
        var tokens_per_s: Double
        var peak_rss_mb: Double
    }

    /// Training-step benchmark: ms per optimizer step (forward with records, backward, AdamW) and peak memory.
    func runTrainBench(_ llama: LlamaModel, presetName: String, dtypeName: String, pool: ThreadPool, mpi: MPICommunicator?) throws {
        guard batchSize >= 1, trainTokens >= 2, trainTokens <= llama.contextLength else {
            throw AdapterError.invalidArgument("--batch-size must be positive and --train-tokens between 2 and the context")
        }
        var spec = AdapterSpec()
        spec.bias = true
        let store = try ParameterStore.fresh(spec, model: llama, clipDim: nil, seed: 0)
        var o = TrainingOptions()
        o.phase = .finetune
        o.batchSize = batchSize
        o.maxWords = trainTokens
        o.steps = repeats + 1
        let trainer = try Trainer(base: llama, store: store, tokenizer: nil, clip: nil, data: nil, captionData: nil, options: o)
        // Under mpirun the batch is the global one: each rank runs its share.
        if let mpi { try trainer.distribute(over: mpi) }
        let V = llama.config.vocabSize
        let batch = (0..<batchSize).map { b -> TokenizedSample in
            let tokens = (0..<trainTokens).map { (($0 + 31 * b) * 7919 + 13) % V }
            let labels = tokens.enumerated().map { $0.offset < trainTokens / 2 ? 0 : max($0.element, 1) }
            return TokenizedSample(tokens: tokens, labels: labels)
        }
        _ = try trainer.trainStep(tokenized: batch)  // warm-up: first touches of weights and buffers
        var runs: [Double] = [], reduceMs: [Double] = []
        var reduceBytes = 0
        for _ in 0..<max(1, repeats) {
            let t0 = Measure.now()
            let r = try trainer.trainStep(tokenized: batch)
            runs.append((Measure.now() - t0) * 1000)
            reduceMs.append(r.allreduceSeconds * 1000)
            reduceBytes = r.allreduceBytes
        }
        guard (mpi?.rank ?? 0) == 0 else { return }
        let best = runs.min()!
        try printJSON(TrainReport(preset: presetName, model: model, dtype: dtypeName, threads: pool.activeThreadCount,
                                  batch_size: batchSize, tokens_per_sequence: trainTokens, trainable_parameters: store.trainableCount,
                                  ranks: mpi?.size ?? 1, allreduce_bytes: reduceBytes, allreduce_ms: reduceMs.sorted()[reduceMs.count / 2],
                                  step_ms: best, step_ms_runs: runs, tokens_per_s: Double(batchSize * trainTokens) / (best / 1000),
                                  peak_rss_mb: Double(Measure.peakResidentBytes()) / 1_048_576))
    }

    struct Prefill: Encodable {
        var tokens: Int
        var tokens_per_s: Double
    }

    struct Report: Encodable {
        var preset: String
        var model: String?
        var dtype: String
        var threads: Int
        var simd: String
        var load_seconds: Double
        var weight_bytes: Int
        var prompt_tokens: Int
        var prefill_tokens_per_s: Double
        var prefill: [Prefill]
        var decode_tokens: Int
        var decode_tokens_per_s: Double
        var decode_ms_per_token: Double
        var read_bandwidth_gb_s: Double
        var decode_bound_tokens_per_s: Double
        var decode_fraction_of_bound: Double
        /// The read test after each round's decode (this machine's bandwidth drifts between ~35 and ~65 GB/s
        /// within minutes), and each round's decode over the bound of its own read test; the figures above are
        /// their medians.
        var read_bandwidth_gb_s_runs: [Double]
        var decode_fraction_of_bound_runs: [Double]
        var peak_rss_mb: Double
        var rss_after_load_mb: Double
        var rounds: Int
        var decode_tokens_per_s_runs: [Double]
        var llamacpp: LlamaCppComparison?
        var adapter_decode_tokens_per_s: Double?
        var adapter_decode_ratio: Double?
        var batched_decode: [BatchedDecode]?
    }

    struct BatchedDecode: Encodable {
        var batch: Int
        var tokens_per_s: Double
        var ms_per_step: Double
        var speedup_vs_batch_1: Double?
    }

    /// Aggregate decode speed with `B` sequences in one forward per step (each after its own 16-token prompt).
    func batchedDecode(_ llama: LlamaModel, options: DecoderOptions) throws -> [BatchedDecode] {
        var out: [BatchedDecode] = []
        let V = llama.config.vocabSize
        let workspace = DecoderState(model: llama, capacity: 1, options: options)
        for B in decodeBatch {
            let states = (0..<B).map { _ in DecoderState(model: llama, capacity: 16 + decodeTokens + 1, options: options) }
            var next = [Int](repeating: 0, count: B)
            for (b, s) in states.enumerated() {
                let logits = try llama.forward(tokens: (0..<16).map { ($0 * 7919 + 13 + 101 * b) % V }, state: s)
                next[b] = Sampler.argmax(logits)
            }
            let t0 = Measure.now()
            for _ in 0..<decodeTokens {
                let logits = try llama.forward(batch: zip(next, states).map { ForwardEntry(tokens: [$0], state: $1) }, workspace: workspace)
                for b in 0..<B { next[b] = Sampler.argmax(logits[b]) }
            }
            let dt = Measure.now() - t0
            let rate = Double(B * decodeTokens) / dt
            out.append(BatchedDecode(batch: B, tokens_per_s: rate, ms_per_step: 1000 * dt / Double(decodeTokens),
                                     speedup_vs_batch_1: out.first(where: { $0.batch == 1 }).map { rate / $0.tokens_per_s }))
        }
        return out
    }

    struct ImageReport: Encodable {
        var preset: String
        var threads: Int
        var simd: String
        var tokens: Int
        var width: Int
        var layers: Int
        var image_encode_ms: Double
        var image_encode_ms_runs: [Double]
        var peak_rss_mb: Double
    }

    /// Image-encode benchmark: one 224x224 image through a synthetic CLIP ViT-L/14 (f16 weights).
    func runImageBench(pool: ThreadPool, dtype: DType) throws {
        let clip = CLIPVisionWeights.synthetic(dtype: dtype)
        let image = SyntheticTensors.make([3, 224, 224], .f32)
        _ = try clipEncodeImage(clip, image: image, pool: pool)
        var runs: [Double] = []
        for _ in 0..<max(1, repeats) {
            let t0 = Measure.now()
            _ = try clipEncodeImage(clip, image: image, pool: pool)
            runs.append((Measure.now() - t0) * 1000)
        }
        try printJSON(ImageReport(preset: preset, threads: pool.activeThreadCount, simd: simdLevel, tokens: clip.tokenCount,
                                  width: clip.width, layers: clip.blocks.count, image_encode_ms: runs.min()!,
                                  image_encode_ms_runs: runs, peak_rss_mb: Double(Measure.peakResidentBytes()) / 1_048_576))
    }

    func run() throws {
        guard let dt = DType(rawValue: dtype), [.f32, .f16, .bf16, .q4_0, .q4_1, .q8_0].contains(dt) else {
            throw AdapterError.invalidArgument("unsupported bench dtype '\(dtype)' (expected f32, f16, bf16, q4_0, q4_1 or q8_0)")
        }
        guard decodeBatch.allSatisfy({ $0 >= 1 && $0 <= 256 }) else {
            throw AdapterError.invalidArgument("--decode-batch sizes must be between 1 and 256")
        }
        guard !promptTokens.isEmpty, promptTokens.allSatisfy({ $0 > 0 && $0 <= 1 << 20 }), decodeTokens > 0, decodeTokens <= 1 << 20,
              repeats >= 1, repeats <= 10_000 else {
            throw AdapterError.invalidArgument("token counts must be between 1 and 1048576, --repeats between 1 and 10000")
        }
        guard prefillChunk >= 0 else { throw AdapterError.invalidArgument("--prefill-chunk must be 0 (automatic) or positive") }
        guard bucketMB > 0, bucketMB <= 4096 else { throw AdapterError.invalidArgument("--bucket-mb must be between 0 and 4096") }
        let mpi = try startMPIRank(timeout: 1800, bucketMB: bucketMB)
        defer { mpi?.finish() }
        if let floats = allreduceFloats {
            guard let mpi else { throw AdapterError.invalidArgument("--allreduce-floats measures MPI ranks: run under mpirun -np N") }
            return try runAllreduceBench(mpi, floats: floats)
        }
        if mpi != nil, !train { throw AdapterError.invalidArgument("under mpirun, bench measures --train or --allreduce-floats") }
        let pool = ThreadPool.shared
        if let threads {
            guard threads >= 1 else { throw AdapterError.invalidArgument("--threads must be at least 1") }
            pool.setActiveThreads(threads)
        }
        if preset == "clip-l14" && model == nil { return try runImageBench(pool: pool, dtype: dt) }
        guard rounds >= 1, rounds <= 100 else { throw AdapterError.invalidArgument("--rounds must be between 1 and 100") }
        // Silently timing one cold round where the user asked for several would report a first-touch figure.
        if repeats > 1 && !train {
            throw AdapterError.invalidArgument("--repeats times image encodes, training steps and allreduces; prefill and decode take --rounds N (medians)")
        }
        var llamaBench: String?
        if let path = compareLlamacpp {
            guard let model, model.hasSuffix(".gguf") else {
                throw AdapterError.invalidArgument("--compare-llamacpp needs --model FILE.gguf (llama.cpp reads GGUF only)")
            }
            if train { throw AdapterError.invalidArgument("--compare-llamacpp measures inference, not --train") }
            llamaBench = try locateLlamaBench(path)
        }
        let longest = promptTokens.max()! + decodeTokens + 1
        let t0 = Measure.now()
        let llama: LlamaModel
        var presetName = preset
        var dtypeName = dt.rawValue
        if let model {
            llama = try ModelLoader.load(path: model, maxSeqLen: max(2048, longest), panels: PanelPacking(noRepack: noRepack || train, int8Activations: int8Activations)).model
            presetName = "model"
            dtypeName = llama.weights.layers[0].wq.dtype.rawValue
        } else {
            guard let p = ModelPreset(rawValue: preset) else {
                throw AdapterError.invalidArgument("unknown preset '\(preset)' (expected one of: \((ModelPreset.allCases.map(\.rawValue) + ["clip-l14"]).joined(separator: ", ")))")
            }
            var config = p.config
            config.maxSeqLen = max(config.maxSeqLen, longest)
            let stored: DType = [.f32, .bf16].contains(dt) ? dt : .f16
            var weights = LlamaWeights.synthetic(config: config, dtype: stored)
            if stored != dt { weights = try weights.quantized(to: dt) }
            if !noRepack && !train { weights = weights.packedForInt8(pool: pool) }
            llama = try LlamaModel(config: config, weights: weights, pool: pool)
        }
        let loadSeconds = Measure.now() - t0
        if train { return try runTrainBench(llama, presetName: presetName, dtypeName: dtypeName, pool: pool, mpi: mpi) }
        let options = DecoderOptions(activations: int8Activations ? .int8 : .f32, prefillChunk: prefillChunk)
        let config = llama.config
        guard longest <= llama.contextLength else {
            throw AdapterError.invalidArgument("prompt + decode tokens (\(longest)) exceed the model's context")
        }
        let cache = DecoderState(model: llama, capacity: longest, options: options)
        // Warm-up: first touches of weights and scratch.
        var logits = try llama.forward(tokens: [1, 2, 3, 4].map { $0 % config.vocabSize }, state: cache)
        let rssAfterLoad = Measure.residentBytes()
        // One round: each prompt length prefilled from an empty cache, then greedy decoding from an empty cache
        // (one untimed token first), as llama-bench's tg test, so the figure is the weights' cost, not the cache's.
        func measureRound() throws -> (prefills: [Prefill], decode: Double) {
            var prefills: [Prefill] = []
            for n in promptTokens {
                cache.reset()
                let prompt = (0..<n).map { ($0 * 7919 + 13) % config.vocabSize }
                let tp = Measure.now()
                logits = try llama.forward(tokens: prompt, state: cache)
                prefills.append(Prefill(tokens: n, tokens_per_s: Double(n) / (Measure.now() - tp)))
            }
            cache.reset()
            logits = try llama.forward(tokens: [1 % config.vocabSize], state: cache)
            let td = Measure.now()
            for _ in 0..<decodeTokens {
                var next = 0
                for i in logits.indices where logits[i] > logits[next] { next = i }
                logits = try llama.forward(tokens: [next], state: cache)
            }
            return (prefills, Double(decodeTokens) / (Measure.now() - td))
        }
        var ours: [(prefills: [Prefill], decode: Double)] = []
        var theirs: [[String: Double]] = []
        var commit: String?, number: Int?
        // The model's peak memory, read before each bandwidth probe (whose 1 GB buffer is the bench's own).
        // Loading's peak counts too: read it before the first reset.
        var peak = Measure.peakResidentBytes()
        var probes: [Double] = []
        let perRoundProbes = Measure.resetPeakResidentBytes()
        for _ in 0..<rounds {
            ours.append(try measureRound())
            if perRoundProbes {
                peak = max(peak, Measure.peakResidentBytes())
                probes.append(Measure.readBandwidth(pool: pool))
                Measure.resetPeakResidentBytes()
            }
            if let llamaBench, let model {
                let r = try runLlamaBench(binary: llamaBench, model: model, threads: pool.activeThreadCount, prompts: promptTokens, decode: decodeTokens)
                theirs.append(r.rates)
                commit = r.commit
                number = r.number
            }
        }
        let prefills = promptTokens.indices.map { i in
            Prefill(tokens: promptTokens[i], tokens_per_s: median(ours.map { $0.prefills[i].tokens_per_s }))
        }
        let decodeRuns = ours.map(\.decode)
        let decodeRate = median(decodeRuns)
        var comparison: LlamaCppComparison?
        if let llamaBench {
            let names = promptTokens.map { "pp\($0)" } + ["tg\(decodeTokens)"]
            let mine = ours.map { round -> [String: Double] in
                var d: [String: Double] = ["tg\(decodeTokens)": round.decode]
                for p in round.prefills { d["pp\(p.tokens)"] = p.tokens_per_s }
                return d
            }
            comparison = makeComparison(binary: llamaBench, commit: commit, number: number, ours: mine, theirs: theirs, order: names)
        }
        var adapterRate: Double?
        if adapterBias {
            let adapted = try llama.with(adapter: AdapterWeights.syntheticBias(config: config))
            let c2 = DecoderState(model: adapted, capacity: longest, prompts: try adapted.makePrompts(visualQuery: nil), options: options)
            logits = try adapted.forward(tokens: Array(0..<promptTokens[0]).map { ($0 * 7919 + 13) % config.vocabSize }, state: c2)
            let ta = Measure.now()
            for _ in 0..<decodeTokens {
                var next = 0
                for i in logits.indices where logits[i] > logits[next] { next = i }
                logits = try adapted.forward(tokens: [next], state: c2)
            }
            adapterRate = Double(decodeTokens) / (Measure.now() - ta)
        }
        let batched = decodeBatch.isEmpty ? nil : try batchedDecode(llama, options: options)
        peak = max(peak, Measure.peakResidentBytes())
        // Without a peak reset (macOS), one probe after everything else.
        if probes.isEmpty { probes = [Measure.readBandwidth(pool: pool)] }
        let bytes = llama.weights.bytesPerToken
        let fractions = probes.count == decodeRuns.count
            ? zip(decodeRuns, probes).map { $0 / ($1 / Double(bytes)) } : [decodeRate / (probes[0] / Double(bytes))]
        let bandwidth = median(probes)
        let bound = bandwidth / Double(bytes)
        try printJSON(Report(
            preset: presetName, model: model, dtype: dtypeName, threads: pool.activeThreadCount, simd: simdLevel,
            load_seconds: loadSeconds, weight_bytes: bytes, prompt_tokens: prefills[0].tokens,
            prefill_tokens_per_s: prefills[0].tokens_per_s, prefill: prefills, decode_tokens: decodeTokens,
            decode_tokens_per_s: decodeRate, decode_ms_per_token: 1000 / decodeRate,
            read_bandwidth_gb_s: bandwidth / 1e9, decode_bound_tokens_per_s: bound,
            decode_fraction_of_bound: median(fractions),
            read_bandwidth_gb_s_runs: probes.map { $0 / 1e9 }, decode_fraction_of_bound_runs: fractions,
            peak_rss_mb: Double(peak) / 1_048_576, rss_after_load_mb: Double(rssAfterLoad) / 1_048_576,
            rounds: rounds, decode_tokens_per_s_runs: decodeRuns, llamacpp: comparison,
            adapter_decode_tokens_per_s: adapterRate, adapter_decode_ratio: adapterRate.map { $0 / decodeRate },
            batched_decode: batched))
    }
}
