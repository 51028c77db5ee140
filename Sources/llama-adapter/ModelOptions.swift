import ArgumentParser
import Foundation
import LlamaAdapter

extension PromptTemplate: ExpressibleByArgument {}
extension ChannelOrder: ExpressibleByArgument {}
extension Compatibility: ExpressibleByArgument {}
extension QuantizationType: ExpressibleByArgument {}
extension ExpertKind: ExpressibleByArgument {}
extension ContextLayout: ExpressibleByArgument {}

/// Where prompts enter, as the `--fusion` flag names it.
enum FusionFlag: String, ExpressibleByArgument, CaseIterable {
    case release, early
}

/// Options shared by every command that loads a model.
struct ModelOptions: ParsableArguments {
    @Option(help: "Official LLaMA folder (params.json + consolidated.*.pth), Hugging Face folder, or .gguf file.")
    var model: String

    @Option(help: "tokenizer.model or tokenizer.json (default: the model's own).")
    var tokenizer: String?

    @Option(name: .customLong("max-seq-len"),
            help: "Context length (default 2048; 512 with --adapter, the official LLaMA-Adapter setting, which also bounds generation: prompt + new tokens <= 512).")
    var maxSeqLen: Int?

    @Option(help: "Re-encode f16/f32 weights on load (less memory, faster decoding).")
    var quantize: QuantizationType?

    @Option(help: "official: reproduce the official code's bugs (base model: no softmax on one-token decoding steps).")
    var compat: Compatibility = .standard

    @Flag(name: .customLong("int8-activations"),
          help: "Multiply Q4_0/Q4_1/Q8_0 weights (and Q4_K/Q5_K/Q6_K with AVX-512 VNNI) with 8-bit activations, as llama.cpp: faster (one integer product per weight instead of the default's three), but no longer at f32 precision. On CPUs with AVX-512 VNNI the weights are repacked at load for an integer GEMM (prefill and decode; same memory, 3% more for wide Q4_K, 1% for wide Q6_K).")
    var int8Activations = false

    @Flag(name: .customLong("no-repack"),
          help: "Keep Q4_0/Q4_1/Q8_0 weights (and wide Q4_K/Q6_K ones) in the file's layout: no repacking at load, f32 FMAs instead of the integer products of the default f32-precision mode (same results to f32 rounding; slower on AVX-512 VNNI CPUs).")
    var noRepack = false

    /// Which matrices these flags repack at load.
    var panels: PanelPacking { PanelPacking(noRepack: noRepack, int8Activations: int8Activations) }

    /// The per-session modes these flags select.
    var decoderOptions: DecoderOptions {
        DecoderOptions(compat: compat, activations: int8Activations ? .int8 : .f32)
    }
}

extension PanelPacking {
    /// What `--no-repack` and `--int8-activations` ask for: nothing, everything (heap copies too), or the file's matrices.
    init(noRepack: Bool, int8Activations: Bool) {
        self = noRepack ? .none : int8Activations ? .all : .mapped
    }
}

/// Adapter, CLIP and image options (LLaMA-Adapter V2).
struct AdapterOptions: ParsableArguments {
    @Option(help: "LLaMA-Adapter V2 checkpoint (official .pth: BIAS-7B, LORA-BIAS-7B, CAPTION-7B, ...).")
    var adapter: String?

    @Option(name: [.customLong("clip"), .customLong("vision")],
            help: "Vision encoder under a visual adapter: OpenAI CLIP .pt (e.g. ViT-L-14.pt), a state dict with visual.* names, or a Hugging Face CLIP, DINOv2 or SigLIP folder.")
    var clip: String?

    @Option(help: "Image (JPEG or PNG) to ask about (default for a visual adapter: the all-zero image, as the official text-only path).")
    var image: String?

    @Option(help: "Channel order fed to the encoder: bgr or rgb (default: bgr for CLIP, as the official cv2-based pipeline; rgb for DINOv2 and SigLIP).")
    var channels: ChannelOrder?

    @Option(help: "Where prompts enter: release (official checkpoints) or early (the paper's early fusion). Default: the early fusion a jointly trained adapter records, else release.")
    var fusion: FusionFlag?

    @Option(name: .customLong("early-layers"), help: "With --fusion early: layers that take the visual prompt (default: the adapter's recorded value, else 1).")
    var earlyLayers: Int?

    @Option(name: .customLong("expert"),
            help: "Expert whose text about --image goes into the prompt as context (paper section 4.4): ocr (Tesseract) or caption (the visual adapter's own caption). Repeatable; works with text-only models too.")
    var experts: [ExpertKind] = []

    @Option(name: .customLong("context-layout"),
            help: "Where the experts' text goes: input (the Alpaca template's ### Input, the paper's way), before or after the question, or document (fenced, then the question).")
    var contextLayout: ContextLayout = .input

    @Option(name: .customLong("max-image-pixels"), help: "Largest image accepted, in pixels (refused from its header, before decoding; default 8192x8192).")
    var maxImagePixels: Int?

    func validate() throws {
        try applyImagePixelLimit(maxImagePixels)
        guard (earlyLayers ?? 0) >= 0 else { throw AdapterError.invalidArgument("--early-layers must be non-negative") }
        if !experts.isEmpty, image == nil { throw AdapterError.invalidArgument("--expert needs --image (the image the expert reads)") }
    }

    /// The experts' text about `--image`, or nil without `--expert`.
    func expertText(_ container: ModelContainer) throws -> String? {
        guard !experts.isEmpty, let image else { return nil }
        return try ExpertPanel(experts).context(imagePath: image, container: container, channels: channels)
    }

    /// Where prompts enter: the flags, else what the adapter recorded (`ModelContainer.defaultFusion`).
    func fusion(_ container: ModelContainer) -> Fusion {
        switch fusion {
        case .early?: return .early(layers: earlyLayers ?? container.model.adapter?.config.earlyLayers ?? 1)
        case .release?: return .release
        case nil: return earlyLayers.map { .early(layers: $0) } ?? container.defaultFusion
        }
    }

    /// Whether the image also enters as a visual prompt (an adapter with a visual branch); otherwise only experts read it.
    func imageIsVisualPrompt(_ container: ModelContainer) -> Bool { container.model.adapter?.visual != nil }
}

/// Loads the model (and adapter, CLIP) these options describe.
func loadContainer(_ m: ModelOptions, _ a: AdapterOptions) throws -> ModelContainer {
    try ModelContainer.load(ModelConfiguration(
        model: m.model, tokenizer: m.tokenizer, adapter: a.adapter, clip: a.clip, maxSeqLen: m.maxSeqLen, quantize: m.quantize,
        panels: m.panels))
}

/// Opens one session on `container` for these options (the image is encoded once, here).
/// `capacity` bounds its KV cache (default: the model's context).
func openSession(_ container: ModelContainer, _ m: ModelOptions, _ a: AdapterOptions, capacity: Int? = nil) throws -> Session {
    var image: ImageContext?
    if let path = a.image, a.experts.isEmpty || a.imageIsVisualPrompt(container) {
        guard container.model.adapter != nil else { throw AdapterError.invalidArgument("--image needs --adapter (or --expert ocr to read the image as text)") }
        guard container.model.adapter?.visual != nil else {
            throw AdapterError.invalidArgument("\(a.adapter ?? "the adapter") has no visual branch, so --image cannot be used with it")
        }
        image = try container.encodeImage(path: path, channels: a.channels)
    }
    let session = try container.makeSession(image: image, fusion: a.fusion(container), options: m.decoderOptions, capacity: capacity)
    for w in session.warnings { FileHandle.standardError.write(Data(("warning: " + w + "\n").utf8)) }
    return session
}

/// Prompt options shared by `generate` and `score`.
struct PromptOptions: ParsableArguments {
    @Option(help: "The prompt (with --template alpaca: the instruction; with chat: the user message).")
    var prompt: String

    @Option(help: "Prompt template (default: alpaca with --adapter, else the model's chat template if it has one, else raw).")
    var template: PromptTemplate?

    @Option(help: "Input field of the Alpaca template (an empty string still selects the with-input template).")
    var input: String?

    @Option(help: "System message for the chat template (default: the template's own).")
    var system: String?

    /// The prompt text after applying the template, with the experts' `context` when given. The template then
    /// defaults to alpaca (whose `### Input:` carries it, as in the paper) with an adapter, which was trained on
    /// that template, and to the model's own chat template without one: on examples/documents SmolLM2 answered
    /// 30 of 40 with the context before the question in its chat template, 29 with the Alpaca input (README).
    func formatted(_ container: ModelContainer, context: String? = nil, layout: ContextLayout = .input) throws -> String {
        guard let context else { return try container.formatPrompt(prompt, template: template, input: input, system: system) }
        let t = template ?? (container.model.adapter == nil && container.chatTemplate != nil ? .chat : .alpaca)
        let (p, i) = promptWithContext(prompt, context: context, template: t, input: input, layout: layout)
        return try container.formatPrompt(p, template: t, input: i, system: system)
    }
}

/// Sampling options shared by `generate` and `chat`. Unset options take the model's defaults: the official
/// LLaMA-Adapter sampler with an adapter, else the model's generation_config.json, else llama.cpp's.
struct SamplingOptions: ParsableArguments {
    @Option(help: "Sampling temperature; 0 is greedy (default: 0.1 with an adapter (official), else the model's generation_config.json, else 0.8 (llama.cpp)).")
    var temperature: Float?

    @Option(name: .customLong("top-p"), help: "Nucleus sampling mass (default: 0.75 with an adapter (official sample_top_p), else generation_config.json, else 0.95 (llama.cpp)).")
    var topP: Float?

    @Option(name: .customLong("top-k"), help: "Keep only the k most likely tokens, 0 disables (default: 0 with an adapter, else generation_config.json, else 40 (llama.cpp)).")
    var topK: Int?

    @Option(name: .customLong("min-p"), help: "Drop tokens below min-p times the top token's probability, 0 disables (default: 0 with an adapter, else 0.05 (llama.cpp)).")
    var minP: Float?

    @Option(name: .customLong("repeat-penalty"), help: "llama.cpp's repeat penalty on the last --repeat-last-n tokens, 1 disables (default 1).")
    var repeatPenalty: Float?

    @Option(name: .customLong("repeat-last-n"), help: "Tokens the repeat penalty looks back over, 0 disables, -1 all (default 64, as llama.cpp).")
    var repeatLastN: Int?

    @Option(help: "Random seed.")
    var seed: UInt64 = 0

    /// The model's defaults overridden by the flags given, with the seed offset by `turn` so each chat
    /// turn draws fresh numbers.
    func parameters(_ container: ModelContainer, turn: UInt64 = 0) throws -> SamplingParameters {
        var p = container.defaultSampling
        if let temperature { p.temperature = temperature }
        if let topP { p.topP = topP }
        if let topK { p.topK = topK }
        if let minP { p.minP = minP }
        if let repeatPenalty { p.repeatPenalty = repeatPenalty }
        if let repeatLastN { p.repeatLastN = repeatLastN }
        p.seed = seed &+ turn
        do { try p.validate() } catch let e as SamplingError { throw AdapterError.invalidArgument(e.description) }
        return p
    }
}

/// Sets the decoder's pixel limit from `--max-image-pixels` (nil: keep the default).
func applyImagePixelLimit(_ pixels: Int?) throws {
    guard let pixels else { return }
    guard pixels >= 1, pixels <= 1 << 34 else { throw AdapterError.invalidArgument("--max-image-pixels must be between 1 and 17179869184") }
    ImageDecoder.maximumPixelCount = pixels
}
