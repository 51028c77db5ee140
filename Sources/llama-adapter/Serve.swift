import ArgumentParser
import Foundation
import Logging
import LlamaAdapter
import AdapterServer

/// `llama-adapter serve`: the OpenAI-compatible HTTP server with continuous batching and the web page.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models), with a chat page at /.")

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "LLaMA-Adapter V2 checkpoint (official .pth or safetensors).")
    var adapter: String?

    @Option(name: [.customLong("clip"), .customLong("vision")],
            help: "Vision encoder (CLIP .pt, or a CLIP, DINOv2 or SigLIP folder) of a visual adapter: request images become visual prompts.")
    var clip: String?

    @Option(name: .customLong("expert"), help: "Expert run on request images whose text goes into the prompt as context: ocr or caption. Repeatable.")
    var experts: [ExpertKind] = []

    @Option(help: "Channel order fed to the encoder: bgr or rgb (default: bgr for CLIP as the official code, rgb for DINOv2 and SigLIP).")
    var channels: ChannelOrder?

    @Option(help: "Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).")
    var host: String = "127.0.0.1"

    @Option(help: "Port to listen on (0: any free port; the chosen one is printed).")
    var port: Int = 8080

    @Option(name: .customLong("api-key"), help: "Require 'Authorization: Bearer KEY' on /v1 endpoints (default: the LLAMA_ADAPTER_API_KEY environment variable, else no key).")
    var apiKey: String?

    @Option(help: "Requests decoded together (continuous batching: one pass over the weights per step serves all of them).")
    var parallel: Int = 4

    @Option(name: .customLong("queue"), help: "Requests that may wait for a free slot; more get HTTP 429.")
    var queue: Int = 64

    @Option(name: .customLong("prefill-chunk"), help: "Prompt tokens prefilled per step while other requests decode.")
    var prefillChunk: Int = 512

    @Option(name: .customLong("max-body-bytes"), help: "Largest request body accepted (images included), in bytes.")
    var maxBodyBytes: Int = 16 << 20

    @Option(name: .customLong("max-image-pixels"), help: "Largest image accepted, in pixels (refused from its header, before decoding).")
    var maxImagePixels: Int = 4096 * 4096

    @Option(name: .customLong("model-name"), help: "Model id reported to clients (default: the model file's name).")
    var modelName: String?

    @Option(name: .customLong("log-level"), help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"

    func validate() throws {
        guard (0...65535).contains(port) else { throw AdapterError.invalidArgument("--port must be between 0 and 65535") }
        guard (1...256).contains(parallel) else { throw AdapterError.invalidArgument("--parallel must be between 1 and 256") }
        guard (0...1_000_000).contains(queue) else { throw AdapterError.invalidArgument("--queue must be between 0 and 1000000") }
        guard prefillChunk >= 1 else { throw AdapterError.invalidArgument("--prefill-chunk must be positive") }
        guard maxBodyBytes >= 1024 else { throw AdapterError.invalidArgument("--max-body-bytes must be at least 1024") }
        guard maxImagePixels >= 1 else { throw AdapterError.invalidArgument("--max-image-pixels must be positive") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw AdapterError.invalidArgument("--log-level must be one of trace, debug, info, notice, warning, error, critical") }
        if let apiKey, apiKey.isEmpty { throw AdapterError.invalidArgument("--api-key must not be empty") }
    }

    func run() throws {
        // Ctrl-C or SIGTERM is how a server is stopped: the default action, not an error line.
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
        let container = try ModelContainer.load(ModelConfiguration(
            model: modelOptions.model, tokenizer: modelOptions.tokenizer, adapter: adapter, clip: clip,
            maxSeqLen: modelOptions.maxSeqLen, quantize: modelOptions.quantize, panels: modelOptions.panels))
        if container.model.adapter?.visual != nil && container.clip == nil {
            FileHandle.standardError.write(Data("warning: the adapter has a visual branch but no --clip was given: requests with images will be refused\n".utf8))
        }
        let panel = experts.isEmpty ? nil : try ExpertPanel(experts)
        let engine = try BatchEngine(container: container, parallel: parallel, queueLimit: queue, prefillChunk: prefillChunk,
                                     options: modelOptions.decoderOptions)
        var o = ServerOptions()
        o.host = host
        o.port = port
        o.apiKey = apiKey ?? ProcessInfo.processInfo.environment["LLAMA_ADAPTER_API_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        o.maxBodyBytes = maxBodyBytes
        o.maxImagePixels = maxImagePixels
        o.channels = channels
        o.modelName = modelName ?? URL(fileURLWithPath: modelOptions.model).deletingPathExtension().lastPathComponent
        var logger = Logger(label: "llama-adapter")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let server = try OpenAIServer(container: container, engine: engine, experts: panel, options: o, logger: logger)
        let host = self.host, name = o.modelName
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var failure: Error?
        Task.detached {
            do {
                try await server.run { port in
                    FileHandle.standardError.write(Data("llama-adapter: listening on http://\(host):\(port) (model \(name), parallel \(engine.parallel))\n".utf8))
                }
            } catch {
                failure = error
            }
            done.signal()
        }
        done.wait()
        engine.shutdown()
        if let failure { throw AdapterError.io("the server stopped: \(failure)") }
    }
}
