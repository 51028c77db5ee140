// The OpenAI-compatible HTTP server (Hummingbird): /v1/chat/completions, /v1/completions, /v1/models,
// /health and the web page, on one shared model whose requests decode together in a `BatchEngine`.
import Foundation
import Hummingbird
import Logging
import NIOCore
import LlamaAdapter

/// Settings of `llama-adapter serve`.
public struct ServerOptions: Sendable {
    /// Address to bind (127.0.0.1: this machine only).
    public var host = "127.0.0.1"
    /// Port (0: any free port; the chosen one is printed).
    public var port = 8080
    /// Bearer key the `/v1` endpoints require (nil: none).
    public var apiKey: String?
    /// Largest request body accepted, in bytes (checked before the body is read when Content-Length says it).
    public var maxBodyBytes = 16 << 20
    /// Largest image accepted, in pixels (checked from the image header, before decoding).
    public var maxImagePixels = 4096 * 4096
    /// Model id reported by `/v1/models` and in responses.
    public var modelName = "llama-adapter"
    /// Channel order CLIP is fed (the official pipeline: BGR).
    public var channels: ChannelOrder?

    /// Defaults: loopback, port 8080, no key.
    public init() {}
}

/// A request's context: Hummingbird's own plus the connection, so a client that goes away cancels its generation.
public struct ServerContext: RequestContext {
    /// Hummingbird's per-request storage.
    public var coreContext: CoreRequestContextStorage
    /// The client's connection.
    public let channel: any Channel

    /// Made by Hummingbird for each request.
    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// An error returned to the client as OpenAI's error object.
struct APIError: Error {
    let status: HTTPResponse.Status
    let message: String
    let type: String
    let code: String?
    let param: String?

    init(_ status: HTTPResponse.Status, _ message: String, type: String = "invalid_request_error", code: String? = nil, param: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
    }

    var response: Response {
        let body: [String: Any] = ["error": ["message": message, "type": type, "param": param as Any? ?? NSNull(),
                                             "code": code as Any? ?? NSNull()]]
        return jsonResponse(body, status: status)
    }
}

/// A JSON response from a JSON-compatible value.
func jsonResponse(_ value: Any, status: HTTPResponse.Status = .ok) -> Response {
    let data = (try? JSONSerialization.data(withJSONObject: value, options: [.withoutEscapingSlashes])) ?? Data("{}".utf8)
    return Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
}

/// Compares two strings in time that depends only on their lengths (API keys).
func constantTimeEqual(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    var diff = UInt8(x.count == y.count ? 0 : 1)
    for i in 0..<max(x.count, y.count) {
        diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
    }
    return diff == 0
}

/// The server: routes, request parsing and the streaming of a `BatchEngine`'s events.
public final class OpenAIServer: Sendable {
    /// The model.
    public let container: ModelContainer
    /// The batching engine every request goes through.
    public let engine: BatchEngine
    /// Experts run on request images (nil: none).
    public let experts: ExpertPanel?
    /// Settings.
    public let options: ServerOptions
    let logger: Logger
    /// The adaption prompts of requests without an image (a visual adapter's blank image), made once.
    let textPrompts: AdapterPrompts?
    let created = Int(Date().timeIntervalSince1970)

    /// A server for `container`; `engine` runs its generations.
    public init(container: ModelContainer, engine: BatchEngine, experts: ExpertPanel?, options: ServerOptions, logger: Logger) throws {
        self.container = container
        self.engine = engine
        self.experts = experts
        self.options = options
        self.logger = logger
        if container.model.adapter != nil {
            let blank = container.model.adapter?.visual != nil ? try container.encodeBlankImage().visualQuery : nil
            textPrompts = try container.model.makePrompts(visualQuery: blank, fusion: container.defaultFusion)
        } else {
            textPrompts = nil
        }
    }

    /// Serves until SIGINT or SIGTERM. `onListening` receives the bound port (useful with port 0).
    public func run(onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let router = Router(context: ServerContext.self)
        router.add(middleware: AccessMiddleware(apiKey: options.apiKey, logger: logger))
        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
                     body: ResponseBody(byteBuffer: ByteBuffer(string: webPage)))
        }
        router.get("/health") { _, _ in jsonResponse(["status": "ok"]) }
        router.get("/v1/models") { [self] _, _ in jsonResponse(["object": "list", "data": [modelObject]]) }
        router.get("/v1/models/{id}") { [self] _, ctx in
            guard ctx.parameters.get("id") == options.modelName else {
                return APIError(.notFound, "The model '\(ctx.parameters.get("id") ?? "")' does not exist", code: "model_not_found", param: "model").response
            }
            return jsonResponse(modelObject)
        }
        router.post("/v1/chat/completions") { [self] req, ctx in await handle(req, ctx, chat: true) }
        router.post("/v1/completions") { [self] req, ctx in await handle(req, ctx, chat: false) }
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: "llama-adapter"),
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? 0) },
            logger: logger)
        try await app.runService()
    }

    var modelObject: [String: Any] {
        ["id": options.modelName, "object": "model", "created": created, "owned_by": "llama-adapter"]
    }

    // MARK: - Completions

    /// What a parsed request asks for.
    struct Parsed {
        var request: BatchRequest
        var stream: Bool
        var includeUsage: Bool
        var logprobs: Bool
        var echoPrompt: String?
    }

    private func handle(_ request: Request, _ ctx: ServerContext, chat: Bool) async -> Response {
        let t0 = DispatchTime.now().uptimeNanoseconds
        do {
            let body = try await readBody(request)
            let parsed = try await parse(body, chat: chat)
            let handle: BatchHandle
            do {
                handle = try engine.submit(parsed.request)
            } catch let e as BatchError {
                if case .queueFull = e { throw APIError(.tooManyRequests, e.description, type: "rate_limit_error", code: "rate_limit_exceeded") }
                throw APIError(.serviceUnavailable, e.description, type: "server_error")
            } catch let e as GenerationError {
                throw APIError(.badRequest, e.description, code: "context_length_exceeded", param: "messages")
            }
            // The connection closing (client gone) cancels the generation at the next step.
            ctx.channel.closeFuture.whenComplete { _ in handle.cancel() }
            let id = (chat ? "chatcmpl-" : "cmpl-") + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
            if parsed.stream { return streamResponse(handle, parsed, id: id, chat: chat, started: t0) }
            return try await completeResponse(handle, parsed, id: id, chat: chat, started: t0)
        } catch let e as APIError {
            logger.info("request refused", metadata: ["status": "\(e.status.code)", "reason": "\(e.message)"])
            return e.response
        } catch {
            logger.error("request failed", metadata: ["error": "\(error)"])
            return APIError(.internalServerError, "\(error)", type: "server_error").response
        }
    }

    private func readBody(_ request: Request) async throws -> [String: Any] {
        if let len = request.headers[.contentLength].flatMap({ Int($0) }), len > options.maxBodyBytes {
            throw APIError(.contentTooLarge, "the request body has \(len) bytes; the limit is \(options.maxBodyBytes)")
        }
        var req = request
        let buffer: ByteBuffer
        do {
            buffer = try await req.collectBody(upTo: options.maxBodyBytes)
        } catch {
            throw APIError(.contentTooLarge, "the request body exceeds the limit of \(options.maxBodyBytes) bytes")
        }
        let data = Data(buffer.readableBytesView)
        guard let object = try? JSONSerialization.jsonObject(with: data), let dict = object as? [String: Any] else {
            throw APIError(.badRequest, "the request body is not a JSON object")
        }
        return dict
    }

    private func parse(_ body: [String: Any], chat: Bool) async throws -> Parsed {
        var sampling = container.defaultSampling
        sampling.seed = UInt64.random(in: 0 ... .max)
        if let v = body["temperature"], !(v is NSNull) {
            guard let t = number(v), t >= 0, t <= 2 else { throw APIError(.badRequest, "temperature must be a number between 0 and 2", param: "temperature") }
            sampling.temperature = Float(t)
        }
        if let v = body["top_p"], !(v is NSNull) {
            guard let p = number(v), p > 0, p <= 1 else { throw APIError(.badRequest, "top_p must be a number in (0, 1]", param: "top_p") }
            sampling.topP = Float(p)
        }
        if let v = body["top_k"], !(v is NSNull) {
            guard let k = integer(v), k >= 0 else { throw APIError(.badRequest, "top_k must be a non-negative integer", param: "top_k") }
            sampling.topK = k
        }
        if let v = body["min_p"], !(v is NSNull) {
            guard let p = number(v), p >= 0, p <= 1 else { throw APIError(.badRequest, "min_p must be between 0 and 1", param: "min_p") }
            sampling.minP = Float(p)
        }
        if let v = body["seed"], !(v is NSNull) {
            guard let s = integer(v) else { throw APIError(.badRequest, "seed must be an integer", param: "seed") }
            sampling.seed = UInt64(bitPattern: Int64(s))
        }
        if let v = body["n"], !(v is NSNull), integer(v) != 1 {
            throw APIError(.badRequest, "only n = 1 is supported", param: "n")
        }
        var stop: [String] = []
        if let v = body["stop"], !(v is NSNull) {
            if let s = v as? String { stop = [s] } else if let a = v as? [String], a.count <= 16 { stop = a } else {
                throw APIError(.badRequest, "stop must be a string or an array of at most 16 strings", param: "stop")
            }
        }
        let stream = (body["stream"] as? Bool) ?? false
        let includeUsage = ((body["stream_options"] as? [String: Any])?["include_usage"] as? Bool) ?? false
        var logprobs: Int?
        if chat {
            if (body["logprobs"] as? Bool) == true {
                let top = body["top_logprobs"].flatMap { integer($0) } ?? 0
                guard top >= 0, top <= 20 else { throw APIError(.badRequest, "top_logprobs must be between 0 and 20", param: "top_logprobs") }
                logprobs = top
            }
        } else if let v = body["logprobs"], !(v is NSNull) {
            guard let n = integer(v), n >= 0, n <= 20 else { throw APIError(.badRequest, "logprobs must be an integer between 0 and 20", param: "logprobs") }
            logprobs = n
        }
        let (text, prompts) = chat ? try await chatPrompt(body) : (try completionPrompt(body), textPrompts)
        let ids = container.tokenizer.encodePrompt(text)
        let context = container.model.contextLength
        guard ids.count < context else {
            throw APIError(.badRequest, "the prompt has \(ids.count) tokens but the context holds \(context)", code: "context_length_exceeded",
                           param: chat ? "messages" : "prompt")
        }
        var maxTokens = context - ids.count
        if let v = body["max_completion_tokens"] ?? body["max_tokens"], !(v is NSNull) {
            guard let m = integer(v), m >= 0 else { throw APIError(.badRequest, "max_tokens must be a non-negative integer", param: "max_tokens") }
            maxTokens = min(m, maxTokens)
        }
        do { try sampling.validate() } catch { throw APIError(.badRequest, "\(error)") }
        let echo = !chat && (body["echo"] as? Bool) == true ? text : nil
        return Parsed(request: BatchRequest(prompt: ids, maxNewTokens: maxTokens, sampling: sampling, prompts: prompts, stop: stop,
                                            logprobs: logprobs),
                      stream: stream, includeUsage: includeUsage, logprobs: logprobs != nil, echoPrompt: echo)
    }

    private func completionPrompt(_ body: [String: Any]) throws -> String {
        if let s = body["prompt"] as? String { return s }
        if let a = body["prompt"] as? [String], a.count == 1 { return a[0] }
        throw APIError(.badRequest, "prompt must be a string (one prompt per request)", param: "prompt")
    }

    /// The rendered conversation and the adaption prompts (the request's image, or the text-only ones).
    private func chatPrompt(_ body: [String: Any]) async throws -> (String, AdapterPrompts?) {
        guard let raw = body["messages"] as? [Any], !raw.isEmpty else {
            throw APIError(.badRequest, "messages must be a non-empty array", param: "messages")
        }
        var messages: [ChatMessage] = []
        var image: (bytes: Data, message: Int)?
        for (i, m) in raw.enumerated() {
            guard let m = m as? [String: Any], let role = m["role"] as? String else {
                throw APIError(.badRequest, "messages[\(i)] must be an object with a role", param: "messages")
            }
            guard ["system", "user", "assistant", "developer"].contains(role) else {
                throw APIError(.badRequest, "messages[\(i)].role '\(role)' is not one of system, user, assistant", param: "messages")
            }
            var text = ""
            switch m["content"] {
            case let s as String: text = s
            case is NSNull, nil: text = ""
            case let parts as [Any]:
                var texts: [String] = []
                for p in parts {
                    guard let p = p as? [String: Any], let type = p["type"] as? String else {
                        throw APIError(.badRequest, "messages[\(i)].content parts must be objects with a type", param: "messages")
                    }
                    switch type {
                    case "text":
                        guard let t = p["text"] as? String else { throw APIError(.badRequest, "a text part needs text", param: "messages") }
                        texts.append(t)
                    case "image_url":
                        let url = (p["image_url"] as? [String: Any])?["url"] as? String ?? p["image_url"] as? String
                        guard let url else { throw APIError(.badRequest, "an image_url part needs image_url.url", param: "messages") }
                        guard image == nil else { throw APIError(.badRequest, "at most one image per request is supported", param: "messages") }
                        image = (try decodeDataURL(url), i)
                    default:
                        throw APIError(.badRequest, "content part type '\(type)' is not supported (text, image_url)", param: "messages")
                    }
                }
                text = texts.joined(separator: "\n")
            default:
                throw APIError(.badRequest, "messages[\(i)].content must be a string or an array of parts", param: "messages")
            }
            messages.append(ChatMessage(role: role == "developer" ? "system" : role, content: text))
        }
        var prompts = textPrompts
        if let image {
            let (context, visual) = try await readImage(image.bytes)
            if let context { messages[image.message].content = "Context:\n" + context + "\n\n" + messages[image.message].content }
            if let visual { prompts = visual }
        }
        do {
            return (try container.renderConversation(messages, template: container.defaultConversationTemplate), prompts)
        } catch {
            throw APIError(.badRequest, "\(error)", param: "messages")
        }
    }

    /// The bytes of a `data:` URL; remote URLs and file paths are refused (never fetched or opened).
    private func decodeDataURL(_ url: String) throws -> Data {
        guard url.hasPrefix("data:") else {
            throw APIError(.badRequest, "only data: URLs are accepted for images (remote URLs and file paths are never fetched or opened)",
                           code: "invalid_image_url", param: "messages")
        }
        guard let comma = url.firstIndex(of: ","), url[..<comma].hasSuffix(";base64") else {
            throw APIError(.badRequest, "an image data: URL must be base64 (data:image/png;base64,...)", code: "invalid_image_url", param: "messages")
        }
        guard let data = Data(base64Encoded: String(url[url.index(after: comma)...]), options: .ignoreUnknownCharacters) else {
            throw APIError(.badRequest, "the image data: URL is not valid base64", code: "invalid_image_url", param: "messages")
        }
        return data
    }

    /// Experts' text and/or the visual adaption prompts for an image, computed off the event loop.
    private func readImage(_ bytes: Data) async throws -> (String?, AdapterPrompts?) {
        let visual = container.model.adapter?.visual != nil && container.clip != nil
        guard visual || experts != nil else {
            throw APIError(.badRequest, "this model does not take images: start the server with --adapter and --clip (a visual adapter), or --expert ocr",
                           code: "image_not_supported", param: "messages")
        }
        let limit = options.maxImagePixels, channels = options.channels
        let container = self.container, experts = self.experts
        return try await withCheckedThrowingContinuation { cont in
            Thread.detachNewThread {
                do {
                    let decoded = try bytes.withUnsafeBytes { try ImageDecoder.decode(bytes: $0, name: "the image", maximumPixelCount: limit) }
                    let text = try experts?.context(image: decoded, container: container, channels: channels)
                    var prompts: AdapterPrompts?
                    if visual {
                        let ctx = try container.encodeImage(decoded, channels: channels)
                        prompts = try container.model.makePrompts(visualQuery: ctx.visualQuery, fusion: container.defaultFusion)
                    }
                    cont.resume(returning: (text, prompts))
                } catch {
                    cont.resume(throwing: APIError(.badRequest, "\(error)", code: "invalid_image", param: "messages"))
                }
            }
        }
    }

    // MARK: - Responses

    private func finishReason(_ f: BatchFinish) -> String { f == .length ? "length" : "stop" }

    private func usage(_ s: BatchSummary) -> [String: Any] {
        ["prompt_tokens": s.promptTokens, "completion_tokens": s.tokens.count, "total_tokens": s.promptTokens + s.tokens.count]
    }

    /// A token's own text for log-probability entries (the engine decoded it once, into `bytes`).
    private func tokenText(_ t: BatchToken) -> String {
        t.id == nil ? t.text : String(decoding: t.bytes, as: UTF8.self)
    }

    /// OpenAI's chat `logprobs.content` entry for a token.
    private func chatLogprob(_ t: BatchToken) -> [String: Any] {
        let top: [[String: Any]] = t.top.map { e in
            let s = container.tokenizer.decode([e.id])
            return ["token": s, "logprob": e.logprob, "bytes": Array(s.utf8).map { Int($0) }]
        }
        return ["token": tokenText(t), "logprob": t.logprob ?? 0, "bytes": t.bytes.map { Int($0) }, "top_logprobs": top]
    }

    private func log(_ s: BatchSummary, started: UInt64, stream: Bool) {
        let total = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        logger.info("completion", metadata: [
            "prompt_tokens": "\(s.promptTokens)", "completion_tokens": "\(s.tokens.count)", "finish": "\(s.finish.rawValue)",
            "stream": "\(stream)", "queue_ms": "\(Int(s.queueSeconds * 1000))", "ttft_ms": "\(Int((s.queueSeconds + s.prefillSeconds) * 1000))",
            "latency_ms": "\(Int(total * 1000))",
            "tokens_per_s": "\(s.decodeSeconds > 0 ? Int(Double(max(s.tokens.count - 1, 0)) / s.decodeSeconds) : 0)"])
    }

    private func completeResponse(_ handle: BatchHandle, _ p: Parsed, id: String, chat: Bool, started: UInt64) async throws -> Response {
        var tokens: [BatchToken] = []
        var summary: BatchSummary?
        do {
            for try await e in handle.events {
                switch e {
                case .token(let t): if t.id != nil { tokens.append(t) }
                case .finished(let s): summary = s
                }
            }
        } catch {
            throw APIError(.internalServerError, "generation failed: \(error)", type: "server_error")
        }
        guard let s = summary else { throw APIError(.internalServerError, "generation ended without a result", type: "server_error") }
        log(s, started: started, stream: false)
        var choice: [String: Any] = ["index": 0, "finish_reason": finishReason(s.finish)]
        if chat {
            choice["message"] = ["role": "assistant", "content": s.text]
            choice["logprobs"] = p.logprobs ? ["content": tokens.map(chatLogprob)] : NSNull()
        } else {
            choice["text"] = (p.echoPrompt ?? "") + s.text
            choice["logprobs"] = p.logprobs ? completionLogprobs(tokens, offset: p.echoPrompt?.count ?? 0) : NSNull()
        }
        return jsonResponse([
            "id": id, "object": chat ? "chat.completion" : "text_completion", "created": Int(Date().timeIntervalSince1970),
            "model": options.modelName, "choices": [choice], "usage": usage(s), "system_fingerprint": NSNull()])
    }

    /// The legacy completions `logprobs` object.
    private func completionLogprobs(_ tokens: [BatchToken], offset: Int) -> [String: Any] {
        let texts = tokens.map(tokenText)
        var offsets: [Int] = []
        var at = offset
        for t in texts { offsets.append(at); at += t.count }
        return ["tokens": texts, "token_logprobs": tokens.map { $0.logprob ?? 0 },
                "top_logprobs": tokens.map { t in Dictionary(t.top.map { (container.tokenizer.decode([$0.id]), $0.logprob) }, uniquingKeysWith: max) },
                "text_offset": offsets]
    }

    private func streamResponse(_ handle: BatchHandle, _ p: Parsed, id: String, chat: Bool, started: UInt64) -> Response {
        let created = Int(Date().timeIntervalSince1970)
        let model = options.modelName
        let body = ResponseBody { [self] writer in
            func send(_ object: Any) async throws {
                let data = (try? JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes])) ?? Data()
                var buffer = ByteBuffer(string: "data: ")
                buffer.writeBytes(data)
                buffer.writeString("\n\n")
                try await writer.write(buffer)
            }
            func chunk(_ choice: [String: Any], usage: Any = NSNull()) -> [String: Any] {
                var c: [String: Any] = ["id": id, "object": chat ? "chat.completion.chunk" : "text_completion", "created": created,
                                        "model": model, "choices": [choice], "system_fingerprint": NSNull()]
                if p.includeUsage { c["usage"] = usage }
                return c
            }
            var sent = 0
            do {
                if chat { try await send(chunk(["index": 0, "delta": ["role": "assistant", "content": ""], "logprobs": NSNull(), "finish_reason": NSNull()])) }
                if let echo = p.echoPrompt { try await send(chunk(["index": 0, "text": echo, "logprobs": NSNull(), "finish_reason": NSNull()])) }
                for try await e in handle.events {
                    switch e {
                    case .token(let t):
                        if t.id != nil { sent += 1 }
                        if t.text.isEmpty && !p.logprobs { continue }
                        if chat {
                            try await send(chunk(["index": 0, "delta": ["content": t.text],
                                                  "logprobs": p.logprobs && t.id != nil ? ["content": [chatLogprob(t)]] : NSNull(),
                                                  "finish_reason": NSNull()]))
                        } else {
                            try await send(chunk(["index": 0, "text": t.text,
                                                  "logprobs": p.logprobs && t.id != nil ? completionLogprobs([t], offset: 0) : NSNull(),
                                                  "finish_reason": NSNull()]))
                        }
                    case .finished(let s):
                        log(s, started: started, stream: true)
                        if s.finish == .cancelled { break }
                        if chat {
                            try await send(chunk(["index": 0, "delta": [String: Any](), "logprobs": NSNull(), "finish_reason": finishReason(s.finish)]))
                        } else {
                            try await send(chunk(["index": 0, "text": "", "logprobs": NSNull(), "finish_reason": finishReason(s.finish)]))
                        }
                        if p.includeUsage {
                            var c = chunk([:], usage: usage(s))
                            c["choices"] = [Any]()
                            try await send(c)
                        }
                    }
                }
            } catch {
                handle.cancel()
                let ms = Int(Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6)
                logger.info("completion", metadata: ["completion_tokens": "\(sent)", "finish": "cancelled", "stream": "true",
                                                     "latency_ms": "\(ms)", "reason": "\(error)"])
                // A failure after the headers went out can only be reported in the stream itself.
                if !(error is CancellationError) {
                    try? await send(["error": ["message": "\(error)", "type": "server_error", "param": NSNull(), "code": NSNull()]])
                }
            }
            try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }
}

/// A JSON number as a Double (JSON booleans are not numbers here).
func number(_ v: Any) -> Double? {
    if type(of: v) == Bool.self { return nil }
    #if canImport(Darwin)
    if let n = v as? NSNumber, CFGetTypeID(n) == CFBooleanGetTypeID() { return nil }
    #endif
    if let n = v as? NSNumber { return n.doubleValue }
    if let d = v as? Double { return d }
    if let i = v as? Int { return Double(i) }
    return nil
}

/// A JSON number that is an integer, as an Int.
func integer(_ v: Any) -> Int? {
    guard let d = number(v), d == d.rounded(), abs(d) <= 9.223372036854775807e18 else { return nil }
    // Large integers (a max_tokens of 2^63 - 1) are exact in the JSON number, not in its Double.
    if let n = v as? NSNumber { return Int(n.int64Value) }
    return Int(d)
}

/// API-key check for `/v1` and one log line per request.
struct AccessMiddleware: RouterMiddleware {
    typealias Context = ServerContext
    let apiKey: String?
    let logger: Logger

    func handle(_ request: Request, context: ServerContext, next: (Request, ServerContext) async throws -> Response) async throws -> Response {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let path = request.uri.path
        if let apiKey, path.hasPrefix("/v1") {
            let given = request.headers[.authorization] ?? ""
            let token = given.hasPrefix("Bearer ") ? String(given.dropFirst(7)) : ""
            guard constantTimeEqual(token, apiKey) else {
                logger.info("request", metadata: ["method": "\(request.method)", "path": "\(path)", "status": "401"])
                return APIError(.unauthorized, given.isEmpty ? "You didn't provide an API key (Authorization: Bearer KEY)." : "Incorrect API key provided.",
                                code: "invalid_api_key").response
            }
        }
        let response: Response
        do {
            response = try await next(request, context)
        } catch let e as HTTPError {
            response = APIError(e.status, e.body ?? e.status.reasonPhrase, type: e.status == .notFound ? "invalid_request_error" : "server_error").response
        }
        logger.info("request", metadata: [
            "method": "\(request.method)", "path": "\(path)", "status": "\(response.status.code)",
            "ms": "\(Double((DispatchTime.now().uptimeNanoseconds - t0) / 1000) / 1000)"])
        return response
    }
}
