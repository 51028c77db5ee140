// The library's front door: a loaded model with everything needed to talk to it (tokenizer, BOS rule,
// stop ids, chat template, default sampling, CLIP), immutable and shared by any number of sessions.
// Anchored on mlx-swift-lm's `ModelContainer`.
import Foundation
import Synchronization
import AdapterCore
import AdapterFormats
import AdapterModel
import AdapterTokenizers
import AdapterVision

/// Where a model comes from and how to load it.
public struct ModelConfiguration: Sendable {
    /// Official LLaMA folder (params.json + consolidated.*.pth), Hugging Face folder, or .gguf file.
    public var model: String
    /// tokenizer.model or tokenizer.json; nil: the model's own.
    public var tokenizer: String?
    /// LLaMA-Adapter V2 checkpoint (official .pth).
    public var adapter: String?
    /// CLIP weights (OpenAI .pt, a state dict with visual.* names, or a Hugging Face folder); needed by
    /// adapters with a visual branch.
    public var clip: String?
    /// Context length; nil: 2048, or 512 with an adapter (the official setting, which also bounds generation).
    public var maxSeqLen: Int?
    /// Re-encode f16/f32 weights on load.
    public var quantize: QuantizationType?
    /// Which Q4_0/Q4_1/Q8_0 matrices are repacked for the integer GEMM (default: those mapped from the file).
    public var panels: PanelPacking

    /// A configuration for `model`.
    public init(model: String, tokenizer: String? = nil, adapter: String? = nil, clip: String? = nil,
                maxSeqLen: Int? = nil, quantize: QuantizationType? = nil, panels: PanelPacking = .mapped) {
        self.model = model
        self.tokenizer = tokenizer
        self.adapter = adapter
        self.clip = clip
        self.maxSeqLen = maxSeqLen
        self.quantize = quantize
        self.panels = panels
    }
}

/// Types `--quantize` can re-encode weights to.
public enum QuantizationType: String, Sendable, CaseIterable {
    case q8_0, q4_0, q4_1

    /// The tensor dtype.
    public var dtype: DType {
        switch self {
        case .q8_0: return .q8_0
        case .q4_0: return .q4_0
        case .q4_1: return .q4_1
        }
    }
}

/// Where the default sampling parameters came from, for `--help` and logs.
public enum SamplingDefaultsSource: String, Sendable {
    /// The official LLaMA-Adapter sampler (an adapter is loaded).
    case official = "the official LLaMA-Adapter defaults"
    /// The model's `generation_config.json`.
    case generationConfig = "the model's generation_config.json"
    /// llama.cpp's defaults (the model ships none).
    case llamaCpp = "llama.cpp's defaults"
}

/// An image encoded for the adapter: the visual query tokens [queryLen, dim] of the visual branch.
public struct ImageContext: Sendable {
    /// Output of the visual branch (`forward_visual`).
    public let visualQuery: Tensor

    /// Wraps visual query tokens computed elsewhere (`LlamaModel.visualQuery(clipFeatures:)`).
    public init(visualQuery: Tensor) { self.visualQuery = visualQuery }
}

/// A loaded model, immutable and `Sendable`: open sessions on it from any thread.
public final class ModelContainer: @unchecked Sendable {
    // @unchecked: `source` (the files the tensors map) is never used after loading; every other stored
    // property is Sendable and immutable, or behind a Mutex.

    /// The model (base weights and adapter).
    public let model: LlamaModel
    /// Its tokenizer, with BOS rule, stop ids and special-token handling.
    public let tokenizer: any Tokenizer
    /// The model's Jinja chat template, if it ships one.
    public let chatTemplate: ChatTemplate?
    /// The vision encoder (CLIP, DINOv2 or SigLIP) under the adapter's visual branch, when given.
    public let clip: (any VisionEncoder)?
    /// Sampling defaults fitting this model (see `samplingDefaultsSource`).
    public let defaultSampling: SamplingParameters
    /// Where `defaultSampling` came from.
    public let samplingDefaultsSource: SamplingDefaultsSource
    /// Short name of the model's format ("meta", "huggingface", "gguf").
    public let format: String
    /// The files the weights are mapped from (kept alive with the model).
    private let source: TensorSource?
    /// The blank image's visual query, encoded once (a CLIP pass costs about a second at ViT-L/14) and
    /// shared by every text-only session of a visual adapter.
    private let blankImage = Mutex<ImageContext?>(nil)

    /// Loads a model, its tokenizer, and optionally an adapter and CLIP.
    public static func load(_ c: ModelConfiguration) throws -> ModelContainer {
        let maxSeqLen = c.maxSeqLen ?? (c.adapter != nil ? 512 : 2048)
        guard maxSeqLen > 0, maxSeqLen <= 1 << 20 else { throw AdapterError.invalidArgument("--max-seq-len must be between 1 and 1048576") }
        let loaded = try ModelLoader.load(path: c.model, maxSeqLen: maxSeqLen, quantize: c.quantize?.dtype, panels: c.panels)
        var tokenizer: any Tokenizer
        var template: String?
        var generationConfig: String?
        if let path = c.tokenizer {
            tokenizer = try openTokenizer(path: path)
        } else if let gguf = loaded.source as? GGUFFile {
            do { tokenizer = try makeTokenizer(gguf: gguf) } catch let e as TokenizerError {
                throw AdapterError.format("\(gguf.path): \(e.description)")
            }
            template = gguf.string("tokenizer.chat_template")
        } else if let path = loaded.tokenizerPath {
            tokenizer = try openTokenizer(path: path)
            let folder = (path as NSString).deletingLastPathComponent
            template = hfChatTemplate(folder: folder)
            generationConfig = folder + "/generation_config.json"
        } else {
            throw AdapterError.invalidArgument("no tokenizer found next to \(c.model); pass --tokenizer PATH")
        }
        if tokenizer.vocabSize > loaded.model.config.vocabSize {
            throw AdapterError.shape("the tokenizer has \(tokenizer.vocabSize) entries but the model's vocabulary has \(loaded.model.config.vocabSize)")
        }
        var model = loaded.model
        if let path = c.adapter {
            let adapter = try AdapterWeights.load(path: path, model: model.config)
            if adapter.visual != nil, c.clip == nil {
                throw AdapterError.invalidArgument("\(path) has a visual branch, which needs its vision encoder: pass --clip PATH (e.g. ViT-L-14.pt or a DINOv2 folder)")
            }
            model = try model.with(adapter: adapter)
        } else if c.clip != nil {
            throw AdapterError.invalidArgument("--clip needs --adapter (a LLaMA-Adapter checkpoint with a visual branch)")
        }
        var clip: (any VisionEncoder)?
        if let path = c.clip {
            guard let visual = model.adapter?.visual else {
                throw AdapterError.invalidArgument("\(c.adapter ?? "the adapter") has no visual branch, so --clip cannot be used with it")
            }
            let encoder = try loadVisionEncoder(path: path)
            let want = visual.clipProjWeight.shape[1]
            guard encoder.outputDim == want else {
                throw AdapterError.shape("the adapter's clip_proj takes features of width \(want), but \(path) gives \(encoder.outputDim)")
            }
            clip = encoder
        }
        let chat: ChatTemplate?
        do { chat = try template.map { try ChatTemplate(source: $0) } } catch let e as ChatTemplateError {
            throw AdapterError.format("chat template: \(e.description)")
        }
        let (sampling, origin): (SamplingParameters, SamplingDefaultsSource)
        if model.adapter != nil {
            (sampling, origin) = (.official, .official)
        } else if let path = generationConfig, let s = try samplingFromGenerationConfig(path: path) {
            (sampling, origin) = (s, .generationConfig)
        } else {
            (sampling, origin) = (.llamaCpp, .llamaCpp)
        }
        return ModelContainer(model: model, tokenizer: tokenizer, chatTemplate: chat, clip: clip, defaultSampling: sampling,
                              samplingDefaultsSource: origin, format: loaded.format, source: loaded.source)
    }

    /// Wraps parts that are already loaded (tests, synthetic models).
    public init(model: LlamaModel, tokenizer: any Tokenizer, chatTemplate: ChatTemplate? = nil, clip: (any VisionEncoder)? = nil,
                defaultSampling: SamplingParameters = .official, samplingDefaultsSource: SamplingDefaultsSource = .official,
                format: String = "memory", source: TensorSource? = nil) {
        self.model = model
        self.tokenizer = tokenizer
        self.chatTemplate = chatTemplate
        self.clip = clip
        self.defaultSampling = defaultSampling
        self.samplingDefaultsSource = samplingDefaultsSource
        self.format = format
        self.source = source
    }

    /// Opens a tokenizer: SentencePiece `tokenizer.model`, Hugging Face `tokenizer.json`, or the vocabulary
    /// embedded in a GGUF model.
    public static func openTokenizer(path: String) throws -> any Tokenizer {
        guard FileManager.default.fileExists(atPath: path) else { throw AdapterError.io("tokenizer file \(path) does not exist") }
        switch try FileFormat.detect(path: path) {
        case .json: return try ByteLevelBPETokenizer(tokenizerJSON: path)
        case .gguf:
            let gguf = try GGUFFile(path: path)
            do { return try makeTokenizer(gguf: gguf) } catch let e as TokenizerError {
                throw AdapterError.format("\(gguf.path): \(e.description)")
            }
        default: return try SentencePieceTokenizer(path: path)
        }
    }

    /// `chat_template` from a Hugging Face `tokenizer_config.json`, if present.
    static func hfChatTemplate(folder: String) -> String? {
        struct Config: Decodable { var chat_template: String? }
        guard let data = FileManager.default.contents(atPath: folder + "/tokenizer_config.json") else { return nil }
        return (try? JSONDecoder().decode(Config.self, from: data))?.chat_template
    }

    /// Sampling defaults from a Hugging Face `generation_config.json`, when it sets any sampling key.
    /// As transformers: `do_sample` false (its default) is greedy; missing values take transformers'
    /// defaults (temperature 1, top-p 1, top-k 50).
    static func samplingFromGenerationConfig(path: String) throws -> SamplingParameters? {
        struct Config: Decodable {
            var do_sample: Bool?
            var temperature: Float?
            var top_p: Float?
            var top_k: Int?
            var repetition_penalty: Float?
        }
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let g: Config
        do { g = try JSONDecoder().decode(Config.self, from: data) } catch {
            throw AdapterError.format("\(path) is not a valid generation_config.json: \(error.localizedDescription)")
        }
        guard g.do_sample != nil || g.temperature != nil || g.top_p != nil || g.top_k != nil || g.repetition_penalty != nil else {
            return nil
        }
        var s = SamplingParameters(temperature: g.temperature ?? 1, topP: g.top_p ?? 1, topK: g.top_k ?? 50,
                                   temperatureFirst: true)
        if g.do_sample != true { s.temperature = 0 }
        if let r = g.repetition_penalty { s.repeatPenalty = r; s.repeatLastN = -1 }
        return s
    }

    // MARK: - Prompts

    /// The template a prompt uses when none is chosen: alpaca with an adapter (the official format),
    /// else the model's chat template when it has one, else raw.
    public var defaultTemplate: PromptTemplate {
        if model.adapter != nil { return .alpaca }
        return chatTemplate != nil ? .chat : .raw
    }

    /// Formats a single prompt: raw text, the official Alpaca `format_prompt` (with `input` the
    /// with-input template), or the model's chat template with an optional system turn.
    public func formatPrompt(_ prompt: String, template: PromptTemplate? = nil, input: String? = nil, system: String? = nil) throws -> String {
        let t = template ?? defaultTemplate
        if input != nil && t != .alpaca { throw AdapterError.invalidArgument("--input needs --template alpaca") }
        if system != nil && t != .chat { throw AdapterError.invalidArgument("--system needs --template chat") }
        switch t {
        case .raw: return prompt
        case .alpaca: return PromptTemplate.alpaca(prompt, input: input)
        case .chat:
            var messages: [ChatMessage] = []
            if let system { messages.append(ChatMessage(role: "system", content: system)) }
            messages.append(ChatMessage(role: "user", content: prompt))
            return try renderChat(messages, addGenerationPrompt: true)
        }
    }

    /// Renders `messages` with the model's chat template, or with `template` when given (e.g. the
    /// built-in multi-turn `ChatTemplate.alpaca`).
    public func renderChat(_ messages: [ChatMessage], addGenerationPrompt: Bool, template: ChatTemplate? = nil) throws -> String {
        guard let t = template ?? chatTemplate else {
            throw AdapterError.unsupported("this model has no chat template; use --template raw or alpaca")
        }
        do {
            return try t.render(messages: messages, addGenerationPrompt: addGenerationPrompt,
                                bosToken: tokenizer.bosText, eosToken: tokenizer.templateEOSText)
        } catch let e as ChatTemplateError {
            throw AdapterError.format("chat template: \(e.description)")
        }
    }

    // MARK: - Images

    /// Encodes an image file (JPEG or PNG) for the adapter: the encoder's transform in `channels` order (nil:
    /// the encoder's default, BGR for CLIP as the official code, RGB for DINOv2 and SigLIP), the encoder, then
    /// the adapter's visual branch.
    public func encodeImage(path: String, channels: ChannelOrder? = nil) throws -> ImageContext {
        try encodeImage(try ImageDecoder.decode(path: path), channels: channels)
    }

    /// Encodes a decoded image (see `encodeImage(path:channels:)`).
    public func encodeImage(_ image: RGBImage, channels: ChannelOrder? = nil) throws -> ImageContext {
        let clip = try requireVisual()
        return try encodeImage(pixels: try clip.preprocess(image, channels: channels))
    }

    /// Encodes an already preprocessed image tensor [3, height, width].
    public func encodeImage(pixels: Tensor) throws -> ImageContext {
        let clip = try requireVisual()
        let feats = try clip.encode(pixels, pool: model.pool)
        return ImageContext(visualQuery: try model.visualQuery(clipFeatures: feats))
    }

    /// What the official training feeds text-only samples: the all-zero image tensor (encoded on first use).
    public func encodeBlankImage() throws -> ImageContext {
        if let cached = blankImage.withLock({ $0 }) { return cached }
        let clip = try requireVisual()
        let context = try encodeImage(pixels: clip.blankPixels())
        blankImage.withLock { $0 = context }
        return context
    }

    private func requireVisual() throws -> any VisionEncoder {
        guard model.adapter?.visual != nil else { throw AdapterError.invalidArgument("the model has no adapter with a visual branch") }
        guard let clip else { throw AdapterError.invalidArgument("images need the adapter's vision encoder (--clip)") }
        return clip
    }

    // MARK: - Sessions

    /// Where prompts enter unless a session says otherwise: the early fusion a jointly trained adapter records
    /// (`early_layers`), else the release's.
    public var defaultFusion: Fusion {
        model.adapter?.config.earlyLayers.map { .early(layers: $0) } ?? .release
    }

    /// Opens a session: its own KV cache and scratch on this shared model. With an adapter, `image`
    /// selects the visual prompt (nil: the blank image for a visual adapter, as the official text-only
    /// path); `fusion` says where prompts enter (nil: `defaultFusion`). `capacity` bounds the session's context.
    public func makeSession(image: ImageContext? = nil, fusion: Fusion? = nil, options: DecoderOptions = DecoderOptions(),
                            capacity: Int? = nil) throws -> Session {
        var prompts: AdapterPrompts?
        var warnings: [String] = []
        let fusion = fusion ?? defaultFusion
        if let adapter = model.adapter {
            var visual = image
            if visual == nil, adapter.visual != nil { visual = try encodeBlankImage() }
            prompts = try model.makePrompts(visualQuery: visual?.visualQuery, fusion: fusion)
            if case .early(let k) = fusion {
                // Released checkpoints never train the early layers' gates (no prompt reached them), so they
                // are exactly zero there and early fusion would silently ignore the image.
                let silent = (0..<k).allSatisfy { l in
                    guard let g = adapter.layers[l].gate else { return true }
                    return (0..<g.count).allSatisfy { g.floats[$0] == 0 }
                }
                if silent { warnings.append("the gates of layers 0..<\(k) are zero in \(adapter.path): with --fusion early the image has no effect") }
            }
        } else if image != nil {
            throw AdapterError.invalidArgument("an image needs an adapter with a visual branch")
        }
        let state = DecoderState(model: model, capacity: capacity, prompts: prompts, options: options)
        return Session(container: self, state: state, warnings: warnings)
    }

    /// Opens a session with adaption prompts built by the caller (`LlamaModel.makePrompts`).
    public func makeSession(prompts: AdapterPrompts?, options: DecoderOptions = DecoderOptions(), capacity: Int? = nil) -> Session {
        Session(container: self, state: DecoderState(model: model, capacity: capacity, prompts: prompts, options: options), warnings: [])
    }
}

extension GGUFFile: GGUFMetadata {}
