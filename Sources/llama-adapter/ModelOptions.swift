import ArgumentParser
import Foundation
import AdapterCore
import AdapterModel
import AdapterTokenizers
import AdapterGeneration
import AdapterVision

/// Options shared by every command that loads a model.
struct ModelOptions: ParsableArguments {
    @Option(help: "Official LLaMA folder (params.json + consolidated.*.pth), Hugging Face folder, or .gguf file.")
    var model: String

    @Option(help: "tokenizer.model or tokenizer.json (default: the model's own).")
    var tokenizer: String?

    @Option(name: .customLong("max-seq-len"),
            help: "Context length (default 2048; 512 with --adapter, the official LLaMA-Adapter setting, which also bounds generation: prompt + new tokens <= 512).")
    var maxSeqLen: Int?

    @Option(help: "Re-encode f16/f32 weights on load: q8_0, q4_0 or q4_1 (less memory, faster decoding).")
    var quantize: String?

    @Option(help: "official: reproduce the official code's bugs (base model: no softmax on one-token decoding steps).")
    var compat: String?

    @Flag(name: .customLong("int8-activations"),
          help: "Decode Q4_0/Q4_1/Q8_0 weights with 8-bit activations (faster, as llama.cpp; no longer exact vs an f32 reference).")
    var int8Activations = false

    /// Loads the model with its tokenizer, BOS rule, stop tokens and chat template. With an adapter the
    /// default context is the official 512, so long prompts get as many new tokens as the official
    /// `generate` gives them (total_len = min(max_seq_len, prompt + max_gen_len)).
    func load(withAdapter: Bool = false) throws -> ModelBundle {
        let maxSeqLen = self.maxSeqLen ?? (withAdapter ? 512 : 2048)
        guard maxSeqLen > 0 else { throw AdapterError.invalidArgument("--max-seq-len must be positive") }
        var q: DType?
        if let quantize {
            guard let d = DType(rawValue: quantize), [.q8_0, .q4_0, .q4_1].contains(d) else {
                throw AdapterError.invalidArgument("--quantize must be q8_0, q4_0 or q4_1")
            }
            q = d
        }
        if let compat, compat != "official" { throw AdapterError.invalidArgument("--compat takes 'official'") }
        let bundle = try ModelBundle.load(modelPath: model, tokenizerPath: tokenizer, maxSeqLen: maxSeqLen, quantize: q)
        bundle.model.officialSoftmaxBug = compat == "official"
        bundle.model.activations = int8Activations ? .int8 : .f32
        return bundle
    }
}

/// Adapter, CLIP and image options (LLaMA-Adapter V2).
struct AdapterOptions: ParsableArguments {
    @Option(help: "LLaMA-Adapter V2 checkpoint (official .pth: BIAS-7B, LORA-BIAS-7B, CAPTION-7B, ...).")
    var adapter: String?

    @Option(help: "CLIP weights: OpenAI .pt (e.g. ViT-L-14.pt), a state dict with visual.* names, or a Hugging Face folder.")
    var clip: String?

    @Option(help: "Image (JPEG or PNG) to ask about.")
    var image: String?

    @Option(help: "Channel order fed to CLIP: bgr (the official cv2-based pipeline) or rgb.")
    var channels: String = "bgr"

    @Option(help: "Where prompts enter: release (official checkpoints) or early (the paper's early fusion).")
    var fusion: String = "release"

    @Option(name: .customLong("early-layers"), help: "With --fusion early: layers that take the visual prompt.")
    var earlyLayers: Int = 1

    /// Attaches the adapter to the bundle's model and returns this session's adapter prompts.
    func prepare(_ bundle: ModelBundle) throws -> AdapterPrompts? {
        guard let order = ChannelOrder(rawValue: channels) else { throw AdapterError.invalidArgument("--channels must be bgr or rgb") }
        guard let mode = FusionMode(rawValue: fusion) else { throw AdapterError.invalidArgument("--fusion must be release or early") }
        let setup = AdapterSetup(adapterPath: adapter, clipPath: clip, imagePath: image, channels: order, fusion: mode,
                                 earlyLayers: mode == .early ? earlyLayers : 0)
        return try setup.prepare(model: bundle.model, warn: { FileHandle.standardError.write(Data(("warning: " + $0 + "\n").utf8)) })
    }
}

/// Prompt options shared by `generate` and `score`.
struct PromptOptions: ParsableArguments {
    @Option(help: "The prompt (with --template alpaca: the instruction; with chat: the user message).")
    var prompt: String

    @Option(help: "Prompt template: raw, alpaca or chat (default: the model's chat template if it has one, else raw).")
    var template: String?

    @Option(help: "Input field of the Alpaca template (an empty string still selects the with-input template).")
    var input: String?

    @Option(help: "System message for the chat template (default: the template's own).")
    var system: String?

    /// The template to use: the flag, else alpaca with an adapter, else the model's chat template when it
    /// has one, else raw.
    func resolvedTemplate(_ bundle: ModelBundle) throws -> PromptTemplate {
        if let template {
            guard let t = PromptTemplate(rawValue: template) else {
                throw AdapterError.invalidArgument("unknown template '\(template)' (expected raw, alpaca or chat)")
            }
            return t
        }
        if bundle.model.adapter != nil { return .alpaca }
        return bundle.chatTemplate != nil ? .chat : .raw
    }

    /// The prompt text after applying the template.
    func formatted(_ bundle: ModelBundle) throws -> String {
        let t = try resolvedTemplate(bundle)
        if input != nil && t != .alpaca { throw AdapterError.invalidArgument("--input needs --template alpaca") }
        if system != nil && t != .chat { throw AdapterError.invalidArgument("--system needs --template chat") }
        switch t {
        case .raw: return prompt
        case .alpaca: return PromptTemplate.alpaca(prompt, input: input)
        case .chat:
            var messages: [ChatMessage] = []
            if let system { messages.append(ChatMessage(role: "system", content: system)) }
            messages.append(ChatMessage(role: "user", content: prompt))
            return try renderChat(bundle, messages: messages, addGenerationPrompt: true)
        }
    }
}

/// Renders `messages` with the model's chat template (an error when the model has none).
/// `source` overrides the model's template (e.g. the built-in multi-turn `ChatTemplate.alpaca`).
func renderChat(_ bundle: ModelBundle, messages: [ChatMessage], addGenerationPrompt: Bool, source: String? = nil) throws -> String {
    guard let source = source ?? bundle.chatTemplate else {
        throw AdapterError.unsupported("this model has no chat template; use --template raw or alpaca")
    }
    // SentencePiece never parses "</s>" written in text as EOS, so a template's eos_token text would only
    // add stray pieces there; byte-level BPE vocabularies do parse their special tokens.
    let eos = bundle.tokenizer is SentencePieceTokenizer ? "" : bundle.eosToken
    do {
        return try ChatTemplate(source: source).render(messages: messages, addGenerationPrompt: addGenerationPrompt,
                                                       bosToken: bundle.bosToken, eosToken: eos)
    } catch let e as ChatTemplateError {
        throw AdapterError.format("chat template: \(e.description)")
    }
}

/// Sampling options shared by `generate` and `chat` (defaults: the official temperature 0.1, top-p 0.75).
struct SamplingOptions: ParsableArguments {
    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0.1

    @Option(name: .customLong("top-p"), help: "Nucleus sampling mass (official sample_top_p).")
    var topP: Float = 0.75

    @Option(name: .customLong("top-k"), help: "Keep only the k most likely tokens; 0 disables.")
    var topK: Int = 0

    @Option(help: "Random seed.")
    var seed: UInt64 = 0

    func validate() throws {
        guard temperature >= 0, temperature.isFinite else { throw AdapterError.invalidArgument("--temperature must be a non-negative number") }
        guard topP > 0, topP <= 1 else { throw AdapterError.invalidArgument("--top-p must be in (0, 1]") }
        guard topK >= 0 else { throw AdapterError.invalidArgument("--top-k must be non-negative") }
    }

    /// The parameters, with the seed offset by `turn` so each chat turn draws fresh numbers.
    func parameters(turn: UInt64 = 0) -> SamplingParameters {
        SamplingParameters(temperature: temperature, topP: topP, topK: topK, seed: seed &+ turn)
    }
}
