import ArgumentParser
import Foundation
import AdapterCore
import AdapterModel

/// `llama-adapter bench`: speed and memory on synthetic weights, printed as one JSON object.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prefill and decode speed, peak memory and the memory-bandwidth bound (JSON).")

    @Option(help: "Model shape: tiny, smollm2 or 7b (synthetic weights).")
    var preset: String = "tiny"

    @Option(help: "Threads to use (default: all cores).")
    var threads: Int?

    @Option(help: "Weight dtype: f32, f16 or bf16.")
    var dtype: String = "f16"

    @Option(name: .customLong("prompt-tokens"), help: "Prompt length for the prefill measurement.")
    var promptTokens: Int = 128

    @Option(name: .customLong("decode-tokens"), help: "Tokens to decode for the decode measurement.")
    var decodeTokens: Int = 32

    struct Report: Encodable {
        var preset: String
        var dtype: String
        var threads: Int
        var simd: String
        var load_seconds: Double
        var weight_bytes: Int
        var prompt_tokens: Int
        var prefill_tokens_per_s: Double
        var decode_tokens: Int
        var decode_tokens_per_s: Double
        var decode_ms_per_token: Double
        var read_bandwidth_gb_s: Double
        var decode_bound_tokens_per_s: Double
        var decode_fraction_of_bound: Double
        var peak_rss_mb: Double
    }

    func run() throws {
        guard let p = ModelPreset(rawValue: preset) else {
            throw AdapterError.invalidArgument("unknown preset '\(preset)' (expected one of: \(ModelPreset.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard let dt = DType(rawValue: dtype), [.f32, .f16, .bf16].contains(dt) else {
            throw AdapterError.invalidArgument("unsupported bench dtype '\(dtype)' (expected f32, f16 or bf16)")
        }
        guard promptTokens > 0, decodeTokens > 0 else { throw AdapterError.invalidArgument("token counts must be positive") }
        let pool = ThreadPool.shared
        if let threads {
            guard threads >= 1 else { throw AdapterError.invalidArgument("--threads must be at least 1") }
            pool.setActiveThreads(threads)
        }
        let bandwidth = Measure.readBandwidth(pool: pool)
        var config = p.config
        config.maxSeqLen = max(config.maxSeqLen, promptTokens + decodeTokens)
        let t0 = Measure.now()
        let weights = LlamaWeights.synthetic(config: config, dtype: dt)
        let model = try LlamaModel(config: config, weights: weights, pool: pool)
        let loadSeconds = Measure.now() - t0

        let prompt = (0..<promptTokens).map { ($0 * 7919 + 13) % config.vocabSize }
        let cache = model.makeCache(capacity: promptTokens + decodeTokens + 1)
        // Warm-up: first touches of weights and scratch.
        _ = try model.forward(tokens: Array(prompt.prefix(4)), cache: cache)
        cache.reset()
        let tp = Measure.now()
        var logits = try model.forwardLogits(tokens: prompt, cache: cache)
        let prefill = Measure.now() - tp
        let td = Measure.now()
        for _ in 0..<decodeTokens {
            var next = 0
            for i in logits.indices where logits[i] > logits[next] { next = i }
            logits = try model.forwardLogits(tokens: [next], cache: cache)
        }
        let decode = Measure.now() - td
        let bytes = weights.bytesPerToken
        let bound = bandwidth / Double(bytes)
        let decodeRate = Double(decodeTokens) / decode
        try printJSON(Report(
            preset: p.rawValue, dtype: dt.rawValue, threads: pool.activeThreadCount, simd: simdLevel,
            load_seconds: loadSeconds, weight_bytes: bytes, prompt_tokens: promptTokens,
            prefill_tokens_per_s: Double(promptTokens) / prefill, decode_tokens: decodeTokens,
            decode_tokens_per_s: decodeRate, decode_ms_per_token: 1000 / decodeRate,
            read_bandwidth_gb_s: bandwidth / 1e9, decode_bound_tokens_per_s: bound,
            decode_fraction_of_bound: decodeRate / bound,
            peak_rss_mb: Double(Measure.peakResidentBytes()) / 1_048_576))
    }
}
