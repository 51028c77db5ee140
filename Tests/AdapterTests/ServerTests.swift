import LlamaAdapter
import CKernels
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `llama-adapter serve` as a child process on a free loopback port.
final class ServerProcess {
    let process = Process()
    let port: Int
    private let errPipe = Pipe()
    private var log = Data()
    private let lock = NSLock()

    init(_ args: [String]) throws {
        let bin = try XCTUnwrap(CLIRunner.binary, "llama-adapter binary not found")
        process.executableURL = bin
        process.arguments = ["serve", "--port", "0"] + args
        process.standardError = errPipe
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // The server prints "listening on http://HOST:PORT" once it accepts connections.
        var found: Int?
        var collected = Data()
        let deadline = Date().addingTimeInterval(120)
        while found == nil, Date() < deadline, process.isRunning {
            let chunk = errPipe.fileHandleForReading.availableData
            if chunk.isEmpty { usleep(20_000); continue }
            collected.append(chunk)
            let text = String(decoding: collected, as: UTF8.self)
            if let r = text.range(of: #"listening on http://[0-9.]+:([0-9]+)"#, options: .regularExpression) {
                found = Int(text[r].split(separator: ":").last!)
            }
        }
        guard let found else {
            process.terminate()
            throw NSError(domain: "ServerProcess", code: 1, userInfo: [NSLocalizedDescriptionKey: "server did not start: \(String(decoding: collected, as: UTF8.self))"])
        }
        port = found
        log = collected
        errPipe.fileHandleForReading.readabilityHandler = { [weak self] h in
            let d = h.availableData
            self?.lock.withLock { self?.log.append(d) }
        }
    }

    /// What the server logged so far.
    var logText: String { String(decoding: lock.withLock { log }, as: UTF8.self) }

    func stop() {
        errPipe.fileHandleForReading.readabilityHandler = nil
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }

    deinit { stop() }
}

/// A minimal HTTP/1.1 client over a socket, so tests control exactly when a connection closes.
final class HTTPConnection {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard r == 0 else { close(fd); throw NSError(domain: "HTTPConnection", code: Int(errno)) }
    }

    deinit { close(fd) }

    func send(_ method: String, _ path: String, body: Data? = nil, headers: [String: String] = [:]) {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        head += "\r\n"
        var data = Data(head.utf8)
        if let body { data.append(body) }
        data.withUnsafeBytes { p in
            var off = 0
            while off < p.count {
                let n = Glibc.send(fd, p.baseAddress! + off, p.count - off, Int32(MSG_NOSIGNAL))
                if n <= 0 { break }
                off += n
            }
        }
    }

    /// Reads until `predicate` holds for what arrived or the peer closes; returns everything read.
    func read(until predicate: (String) -> Bool = { _ in false }, timeout: TimeInterval = 300) -> String {
        String(decoding: readData(until: predicate, timeout: timeout), as: UTF8.self)
    }

    /// As `read`, the raw bytes.
    func readData(until predicate: (String) -> Bool = { _ in false }, timeout: TimeInterval = 300) -> Data {
        var all = Data()
        var buf = [UInt8](repeating: 0, count: 65536)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 200) <= 0 { continue }
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            all.append(contentsOf: buf[0..<n])
            if predicate(String(decoding: all, as: UTF8.self)) { break }
        }
        return all
    }
}

/// A parsed HTTP response.
struct HTTPResult {
    let status: Int
    let head: String
    let body: String
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:] }

    init(_ raw: Data) {
        let bytes = [UInt8](raw)
        let sep: [UInt8] = [13, 10, 13, 10]
        var split = bytes.count
        if bytes.count >= 4 { for i in 0...(bytes.count - 4) where Array(bytes[i..<i + 4]) == sep { split = i; break } }
        head = String(decoding: bytes[0..<split], as: UTF8.self)
        status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
        var b = Array(bytes[min(bytes.count, split + 4)...])
        if head.lowercased().contains("transfer-encoding: chunked") { b = HTTPResult.dechunk(b) }
        body = String(decoding: b, as: UTF8.self)
    }

    /// The payload of a chunked body, computed on bytes (chunk sizes count bytes, not characters).
    static func dechunk(_ s: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [], i = 0
        while i < s.count {
            var j = i
            while j + 1 < s.count, !(s[j] == 13 && s[j + 1] == 10) { j += 1 }
            guard j + 1 < s.count, let n = Int(String(decoding: s[i..<j], as: UTF8.self), radix: 16), n > 0 else { break }
            let start = j + 2
            out += s[start..<min(s.count, start + n)]
            i = start + n + 2
        }
        return out
    }
}

func http(_ port: Int, _ method: String, _ path: String, json: Any? = nil, raw: Data? = nil, headers: [String: String] = [:]) throws -> HTTPResult {
    let c = try HTTPConnection(port: port)
    let body = try raw ?? json.map { try JSONSerialization.data(withJSONObject: $0) }
    c.send(method, path, body: body, headers: headers)
    return HTTPResult(c.readData())
}

/// The streamed `data:` payloads of a server-sent-events body, in order.
func sseEvents(_ body: String) -> [String] {
    body.components(separatedBy: "\n\n").compactMap { e in
        let t = e.trimmingCharacters(in: .whitespacesAndNewlines)
        return t.hasPrefix("data: ") ? String(t.dropFirst(6)) : nil
    }
}

/// Multi-vector mat-vec kernels: bit for bit the single-vector kernels, for every vector count and row range.
final class BatchKernelTests: XCTestCase {
    func testMultiVectorKernelsEqualSingleVectorKernelsBitForBit() throws {
        let K = 96, N = 37
        var rng = SeededGenerator(seed: 5)
        let floats = (0..<(N * K)).map { _ in Float(rng.nextUnit() * 2 - 1) }
        let w = Tensor(floats, shape: [N, K])
        for dtype in [DType.q4_0, .q4_1, .q8_0] {
            let q = try w.quantized(to: dtype)
            for T in [1, 2, 3, 5, 8, 9, 16] {
                let x = (0..<(T * K)).map { _ in Float(rng.nextUnit() * 4 - 2) }
                var sums = [Float](repeating: 0, count: T * K / 32)
                for t in 0..<T { x.withUnsafeBufferPointer { xp in sums.withUnsafeMutableBufferPointer { ck_block_sums32(xp.baseAddress! + t * K, $0.baseAddress! + t * K / 32, K) } } }
                var single = [Float](repeating: 0, count: T * N), multi = [Float](repeating: 1, count: T * N)
                for t in 0..<T {
                    x.withUnsafeBufferPointer { xp in sums.withUnsafeBufferPointer { sp in single.withUnsafeMutableBufferPointer { yp in
                        let xs = xp.baseAddress! + t * K, ss = sp.baseAddress! + t * K / 32, y = yp.baseAddress! + t * N
                        switch dtype {
                        case .q4_0: ck_matvec_q4_0(q.data, xs, ss, y, K, 0, N)
                        case .q4_1: ck_matvec_q4_1(q.data, xs, ss, y, K, 0, N)
                        default: ck_matvec_q8_0(q.data, xs, ss, y, K, 0, N)
                        }
                    } } }
                }
                x.withUnsafeBufferPointer { xp in sums.withUnsafeBufferPointer { sp in multi.withUnsafeMutableBufferPointer { yp in
                    // Two row ranges, as two threads would take them.
                    for (a, b) in [(0, 20), (20, N)] {
                        switch dtype {
                        case .q4_0: ck_matmul_q4_0(q.data, xp.baseAddress!, K, sp.baseAddress!, K / 32, yp.baseAddress!, N, T, K, a, b)
                        case .q4_1: ck_matmul_q4_1(q.data, xp.baseAddress!, K, sp.baseAddress!, K / 32, yp.baseAddress!, N, T, K, a, b)
                        default: ck_matmul_q8_0(q.data, xp.baseAddress!, K, sp.baseAddress!, K / 32, yp.baseAddress!, N, T, K, a, b)
                        }
                    }
                } } }
                XCTAssertEqual(single.map(\.bitPattern), multi.map(\.bitPattern), "\(dtype) T=\(T)")
            }
        }
    }

    func testBatchedForwardEqualsLoneForwardBitForBitOnSmolLM2() throws {
        let container = try ModelContainer.load(ModelConfiguration(model: try Fixtures.smolLM2(), maxSeqLen: 256))
        let model = container.model
        let prompts = ["The capital of France is", "Write a haiku about the sea.", "1, 2, 3, 4,", "Hello"].map { container.tokenizer.encodePrompt($0) }
        // Alone: each sequence's logits over 3 decoding steps.
        var alone: [[[Float]]] = []
        for p in prompts {
            let s = DecoderState(model: model, capacity: 64)
            var l = try model.forwardArray(tokens: p, state: s)
            var steps: [[Float]] = []
            for _ in 0..<3 {
                l = try model.forwardArray(tokens: [Sampler.argmax(l)], state: s)
                steps.append(l)
            }
            alone.append(steps)
        }
        // Together: one forward per step for all four.
        let states = prompts.map { _ in DecoderState(model: model, capacity: 64) }
        var next = try zip(prompts, states).map { Sampler.argmax(try model.forwardArray(tokens: $0, state: $1)) }
        let workspace = DecoderState(model: model, capacity: 1)
        for step in 0..<3 {
            let logits = try model.forward(batch: zip(next, states).map { ForwardEntry(tokens: [$0], state: $1) }, workspace: workspace)
            for b in 0..<prompts.count {
                XCTAssertEqual(Array(logits[b]).map(\.bitPattern), alone[b][step].map(\.bitPattern), "sequence \(b) step \(step)")
                next[b] = Sampler.argmax(logits[b])
            }
        }
    }
}

/// The HTTP server over real loopback connections.
final class ServerTests: XCTestCase {
    static let tiny = ["--model", Fixtures.path("tiny_llama/model"), "--adapter", Fixtures.path("tiny_adapter/adapter_bias.pth"),
                       "--clip", Fixtures.path("tiny_adapter/clip_tiny.pth")]

    static let golden: [String: Any] = {
        let data = try! Data(contentsOf: Fixtures.root.appendingPathComponent("tiny_adapter/golden.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }()

    static func goldenCase(_ name: String) -> [String: Any] {
        let cases = ((golden["adapters"] as! [String: Any])["bias"] as! [String: Any])["cases"] as! [[String: Any]]
        return cases.first { $0["name"] as? String == name }!
    }

    func testHealthModelsPageAndUnknownPaths() throws {
        let s = try ServerProcess(Self.tiny + ["--model-name", "tiny"])
        XCTAssertEqual(try http(s.port, "GET", "/health").json["status"] as? String, "ok")
        let models = try http(s.port, "GET", "/v1/models").json
        XCTAssertEqual(((models["data"] as? [[String: Any]])?.first?["id"]) as? String, "tiny")
        XCTAssertEqual(try http(s.port, "GET", "/v1/models/tiny").json["object"] as? String, "model")
        XCTAssertEqual(try http(s.port, "GET", "/v1/models/other").status, 404)
        let page = try http(s.port, "GET", "/")
        XCTAssertEqual(page.status, 200)
        XCTAssertTrue(page.body.contains("/v1/chat/completions") && page.body.contains("viewport"))
        // No external assets: nothing is loaded from another origin.
        XCTAssertFalse(page.body.contains("http://") || page.body.contains("https://"), "the page references an external asset")
        XCTAssertEqual(try http(s.port, "GET", "/nothing").status, 404)
    }

    func testCompletionsGiveTheOfficialGreedyTokens() throws {
        let s = try ServerProcess(Self.tiny)
        let c = Self.goldenCase("text_only")
        let n = (c["greedy_tokens"] as! [Int]).count
        let r = try http(s.port, "POST", "/v1/completions", json: ["prompt": c["prompt"]!, "max_tokens": n, "temperature": 0])
        XCTAssertEqual(r.status, 200, r.body)
        let choice = (r.json["choices"] as! [[String: Any]])[0]
        XCTAssertEqual(choice["text"] as? String, c["greedy_text"] as? String)
        let usage = r.json["usage"] as! [String: Any]
        XCTAssertEqual(usage["prompt_tokens"] as? Int, (c["tokens"] as! [Int]).count)
        XCTAssertEqual(usage["completion_tokens"] as? Int, n)
    }

    func testChatWithADataURLImageGivesTheOfficialAnswer() throws {
        let s = try ServerProcess(Self.tiny)
        let c = Self.goldenCase("image")
        let prompt = c["prompt"] as! String
        let instruction = prompt.components(separatedBy: "### Instruction:\n")[1].components(separatedBy: "\n\n### Response:")[0]
        let png = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("tiny_adapter/image.png")))
        let n = (c["greedy_tokens"] as! [Int]).count
        let body: [String: Any] = [
            "messages": [["role": "user", "content": [["type": "text", "text": instruction],
                                                      ["type": "image_url", "image_url": ["url": "data:image/png;base64," + png.base64EncodedString()]]]]],
            "max_tokens": n, "temperature": 0]
        let r = try http(s.port, "POST", "/v1/chat/completions", json: body)
        XCTAssertEqual(r.status, 200, r.body)
        let message = ((r.json["choices"] as! [[String: Any]])[0]["message"] as! [String: Any])
        XCTAssertEqual(message["content"] as? String, c["greedy_text"] as? String)
        XCTAssertEqual((r.json["usage"] as! [String: Any])["prompt_tokens"] as? Int, (c["tokens"] as! [Int]).count)
    }

    /// A visual adapter on DINOv2 grown here by joint training (a few steps on a tiny shapes world, tiny model and
    /// DINOv2) records its early fusion; `serve` answers an image question sent as a `data:` URL exactly as
    /// `generate --image` does, without any fusion or channel flag.
    func testJointlyTrainedDinov2AdapterAnswersOverHTTPAsGenerateDoes() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("joint-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try ShapesWorldWriter(images: 8, seed: 5).write(to: dir)
        let container = try ModelContainer.load(ModelConfiguration(model: Fixtures.path("tiny_llama/model"),
                                                                   tokenizer: Fixtures.path("tiny_llama/tokenizer.model")))
        let encoder = try loadVisionEncoder(path: Fixtures.path("vision/dinov2_tiny"))
        var spec = AdapterSpec()
        spec.bias = true; spec.queryLayer = 1; spec.queryLen = 2; spec.visual = true
        spec.vEmbedDim = 16; spec.vDepth = 1; spec.vNumHeads = 2
        let store = try ParameterStore.fresh(spec, model: container.model, clipDim: encoder.outputDim, seed: 1)
        var o = TrainingOptions()
        o.phase = .joint; o.batchSize = 2; o.steps = 6; o.lr = 2e-2; o.maxWords = 96; o.augment = false; o.channels = .rgb
        let trainer = try Trainer(base: container.model, store: store, tokenizer: container.tokenizer, clip: encoder,
                                  data: try TrainingDataset.load(path: dir + "/questions.json"),
                                  captionData: try TrainingDataset.load(path: dir + "/captions.tsv"), options: o)
        while trainer.step < o.steps { _ = try trainer.trainStep() }
        let adapter = dir + "/adapter.pth"
        try trainer.store.write(to: adapter, format: .pytorch)
        let args = ["--model", Fixtures.path("tiny_llama/model"), "--tokenizer", Fixtures.path("tiny_llama/tokenizer.model"),
                    "--adapter", adapter, "--clip", Fixtures.path("vision/dinov2_tiny")]
        let image = dir + "/images/00000.png"
        let cli = try CLIRunner.run(["generate"] + args + ["--image", image, "--prompt", "What color is the circle?",
                                                          "--temperature", "0", "--max-new-tokens", "8", "--json"])
        XCTAssertEqual(cli.status, 0, cli.stderr)
        let expected = try JSONSerialization.jsonObject(with: Data(cli.stdout.utf8)) as! [String: Any]
        let s = try ServerProcess(args)
        let png = try Data(contentsOf: URL(fileURLWithPath: image))
        let body: [String: Any] = [
            "messages": [["role": "user", "content": [["type": "text", "text": "What color is the circle?"],
                                                      ["type": "image_url", "image_url": ["url": "data:image/png;base64," + png.base64EncodedString()]]]]],
            "max_tokens": 8, "temperature": 0]
        let r = try http(s.port, "POST", "/v1/chat/completions", json: body)
        XCTAssertEqual(r.status, 200, r.body)
        let message = ((r.json["choices"] as! [[String: Any]])[0]["message"] as! [String: Any])
        XCTAssertEqual(message["content"] as? String, expected["text"] as? String)
        // Joint training recorded its early fusion (2 layers, the last one for the adaption prompt).
        let early = try AdapterWeights.load(path: adapter, model: container.model.config)
        XCTAssertEqual(early.config.earlyLayers, 1)
    }

    func testStreamedChatEqualsThePlainAnswerAndEndsWithDone() throws {
        let s = try ServerProcess(Self.tiny)
        let body: [String: Any] = ["messages": [["role": "user", "content": "Tell me about alpacas."]], "max_tokens": 12, "temperature": 0,
                                   "stream": true, "stream_options": ["include_usage": true]]
        let r = try http(s.port, "POST", "/v1/chat/completions", json: body)
        XCTAssertEqual(r.status, 200)
        XCTAssertTrue(r.head.lowercased().contains("content-type: text/event-stream"), r.head)
        let events = sseEvents(r.body)
        XCTAssertEqual(events.last, "[DONE]")
        var text = "", finish: String?, usage: [String: Any]?
        for e in events.dropLast() {
            let j = try JSONSerialization.jsonObject(with: Data(e.utf8)) as! [String: Any]
            XCTAssertEqual(j["object"] as? String, "chat.completion.chunk")
            if let u = j["usage"] as? [String: Any] { usage = u }
            guard let choice = (j["choices"] as? [[String: Any]])?.first else { continue }
            text += ((choice["delta"] as? [String: Any])?["content"] as? String) ?? ""
            if let f = choice["finish_reason"] as? String { finish = f }
        }
        XCTAssertEqual(finish, "length")
        XCTAssertEqual(usage?["completion_tokens"] as? Int, 12)
        var plain = body
        plain["stream"] = false
        let p = try http(s.port, "POST", "/v1/chat/completions", json: plain)
        XCTAssertEqual(((p.json["choices"] as! [[String: Any]])[0]["message"] as! [String: Any])["content"] as? String, text)
    }

    func testBadRequestsGetOpenAIErrorObjects() throws {
        let s = try ServerProcess(Self.tiny + ["--max-body-bytes", "4096", "--max-image-pixels", "1000"])
        func expect(_ r: HTTPResult, _ status: Int, _ needle: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertEqual(r.status, status, r.body, file: file, line: line)
            let e = r.json["error"] as? [String: Any]
            XCTAssertNotNil(e?["type"] as? String, r.body, file: file, line: line)
            XCTAssertTrue((e?["message"] as? String ?? "").contains(needle), r.body, file: file, line: line)
        }
        expect(try http(s.port, "POST", "/v1/chat/completions", raw: Data("{not json".utf8)), 400, "JSON")
        expect(try http(s.port, "POST", "/v1/chat/completions", json: ["messages": []]), 400, "messages")
        expect(try http(s.port, "POST", "/v1/chat/completions", json: ["messages": [["role": "wizard", "content": "x"]]]), 400, "role")
        expect(try http(s.port, "POST", "/v1/chat/completions", json: ["messages": [["role": "user", "content": "x"]], "temperature": "hot"]), 400, "temperature")
        expect(try http(s.port, "POST", "/v1/completions", json: ["prompt": "x", "max_tokens": -1]), 400, "max_tokens")
        expect(try http(s.port, "POST", "/v1/completions", json: ["prompt": 7]), 400, "prompt")
        for url in ["https://example.com/cat.png", "file:///etc/passwd", "/etc/passwd"] {
            let m: [String: Any] = ["role": "user", "content": [["type": "image_url", "image_url": ["url": url]]]]
            expect(try http(s.port, "POST", "/v1/chat/completions", json: ["messages": [m]]), 400, "data: URLs")
        }
        // Over the body limit: refused from Content-Length, before the body is read.
        expect(try http(s.port, "POST", "/v1/completions", json: ["prompt": String(repeating: "a", count: 10_000)]), 413, "limit")
        // Over the pixel limit: a 142-byte PNG of 1x65000 pixels is refused from its header.
        let strip = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("images/strip_1x65000.png")))
        let m: [String: Any] = ["role": "user", "content": [["type": "text", "text": "hi"],
                                                            ["type": "image_url", "image_url": ["url": "data:image/png;base64," + strip.base64EncodedString()]]]]
        expect(try http(s.port, "POST", "/v1/chat/completions", json: ["messages": [m]]), 400, "pixel")
        XCTAssertTrue(s.process.isRunning)
    }

    func testContextLengthIsReportedWithOpenAIsCode() throws {
        let s = try ServerProcess(Self.tiny)
        let r = try http(s.port, "POST", "/v1/completions", json: ["prompt": String(repeating: "alpaca ", count: 600)])
        XCTAssertEqual(r.status, 400, r.body)
        XCTAssertEqual((r.json["error"] as? [String: Any])?["code"] as? String, "context_length_exceeded")
        // A max_tokens of 2^63 - 1 means "as many as fit" (the context bounds it), not an error or a trap.
        let huge = try http(s.port, "POST", "/v1/completions", raw: Data(#"{"prompt": "Hi", "max_tokens": 9223372036854775807, "seed": -5}"#.utf8))
        XCTAssertEqual(huge.status, 200, huge.body)
        XCTAssertEqual(try http(s.port, "POST", "/v1/completions", json: ["prompt": "Hi", "max_tokens": 3.5]).status, 400)
    }

    func testAPIKeyIsRequiredOnV1Only() throws {
        let s = try ServerProcess(Self.tiny + ["--api-key", "s3cret"])
        let body: [String: Any] = ["prompt": "Hi", "max_tokens": 2]
        XCTAssertEqual(try http(s.port, "POST", "/v1/completions", json: body).status, 401)
        let wrong = try http(s.port, "POST", "/v1/completions", json: body, headers: ["Authorization": "Bearer s3creT"])
        XCTAssertEqual(wrong.status, 401)
        XCTAssertEqual((wrong.json["error"] as? [String: Any])?["code"] as? String, "invalid_api_key")
        XCTAssertEqual(try http(s.port, "GET", "/v1/models").status, 401)
        XCTAssertEqual(try http(s.port, "POST", "/v1/completions", json: body, headers: ["Authorization": "Bearer s3cret"]).status, 200)
        XCTAssertEqual(try http(s.port, "GET", "/health").status, 200)
        XCTAssertEqual(try http(s.port, "GET", "/").status, 200)
    }

    func testStopStringsEndTheAnswerAndAreNotReturned() throws {
        let s = try ServerProcess(Self.tiny)
        let c = Self.goldenCase("text_only")
        let full = c["greedy_text"] as! String
        // A stop string taken from the middle of the official greedy answer.
        let chars = Array(full)
        guard chars.count >= 6 else { throw XCTSkip("greedy answer too short") }
        let stop = String(chars[3..<5])
        let r = try http(s.port, "POST", "/v1/completions", json: ["prompt": c["prompt"]!, "max_tokens": 40, "temperature": 0, "stop": [stop]])
        let choice = (r.json["choices"] as! [[String: Any]])[0]
        let expected = String(full[..<full.range(of: stop)!.lowerBound])
        XCTAssertEqual(choice["text"] as? String, expected)
        XCTAssertEqual(choice["finish_reason"] as? String, "stop")
    }

    func testQueueFullGets429AndADisconnectCancelsTheGeneration() throws {
        let s = try ServerProcess(["--model", try Fixtures.smolLM2(), "--parallel", "1", "--queue", "0", "--max-seq-len", "2048"])
        let long: [String: Any] = ["messages": [["role": "user", "content": "Count from 1 to 1000."]], "max_tokens": 1500, "temperature": 0, "stream": true]
        let first = try HTTPConnection(port: s.port)
        first.send("POST", "/v1/chat/completions", body: try JSONSerialization.data(withJSONObject: long))
        // Wait until it streams: it holds the only slot.
        _ = first.read(until: { $0.contains("\"content\"") && $0.components(separatedBy: "data: ").count > 3 }, timeout: 120)
        let busy = try http(s.port, "POST", "/v1/chat/completions", json: ["messages": [["role": "user", "content": "Hi"]], "max_tokens": 2])
        XCTAssertEqual(busy.status, 429, busy.body)
        XCTAssertEqual((busy.json["error"] as? [String: Any])?["code"] as? String, "rate_limit_exceeded")
        // The client goes away: its generation stops and the slot frees up.
        close(first.fd)
        let deadline = Date().addingTimeInterval(60)
        var ok = false
        while Date() < deadline {
            if s.logText.contains("finish=cancelled") { ok = true; break }
            usleep(100_000)
        }
        XCTAssertTrue(ok, "the disconnected stream was not cancelled: \(s.logText.suffix(800))")
        let after = try http(s.port, "POST", "/v1/chat/completions", json: ["messages": [["role": "user", "content": "Hi"]], "max_tokens": 2])
        XCTAssertEqual(after.status, 200, after.body)
    }

    /// The page in headless Chromium: attach the receipt, ask, and see the streamed answer (OCR expert on SmolLM2).
    /// Behind LLAMA_ADAPTER_BROWSER_TEST=1 (needs Debian's `chromium` and PyPI's `websocket-client`); the screenshot is
    /// saved to LLAMA_ADAPTER_SCREENSHOT (default: a temporary file).
    func testThePageStreamsAnAnswerAboutAnUploadedImageInChromium() throws {
        guard ProcessInfo.processInfo.environment["LLAMA_ADAPTER_BROWSER_TEST"] == "1" else {
            throw XCTSkip("set LLAMA_ADAPTER_BROWSER_TEST=1 to run the page in headless Chromium")
        }
        let s = try ServerProcess(["--model", try Fixtures.smolLM2(), "--expert", "ocr", "--max-seq-len", "1024"])
        let shot = ProcessInfo.processInfo.environment["LLAMA_ADAPTER_SCREENSHOT"]
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("llama-adapter-page.png").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", Fixtures.root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("tools/browser/page_test.py").path,
                       "--url", "http://127.0.0.1:\(s.port)", "--image", Fixtures.path("ocr/receipt.png"),
                       "--message", "What is the total on this receipt?", "--screenshot", shot]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        let r = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any], String(decoding: data, as: UTF8.self))
        XCTAssertEqual(r["state"] as? String, "done", "\(r)")
        XCTAssertEqual(r["user_images"] as? Int, 1)
        XCTAssertTrue((r["answer"] as? String ?? "").contains("14.40"), "\(r)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: shot))
    }

    func testConcurrentClientsGetTheAnswersTheyGetAlone() throws {
        let s = try ServerProcess(["--model", try Fixtures.smolLM2(), "--parallel", "4", "--max-seq-len", "512"])
        let requests: [[String: Any]] = [
            ["messages": [["role": "user", "content": "What is the capital of France?"]], "max_tokens": 10, "temperature": 0],
            ["messages": [["role": "user", "content": "Write a haiku about the sea."]], "max_tokens": 10, "temperature": 0.8, "seed": 7],
            ["messages": [["role": "user", "content": "Name three colours."]], "max_tokens": 10, "temperature": 0],
            ["messages": [["role": "system", "content": "Answer in French."], ["role": "user", "content": "Hello!"]], "max_tokens": 10, "temperature": 0.7, "seed": 3],
        ]
        func answer(_ r: HTTPResult) -> String {
            ((r.json["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String ?? "<\(r.status) \(r.body)>"
        }
        let alone = try requests.map { answer(try http(s.port, "POST", "/v1/chat/completions", json: $0)) }
        var together = [String](repeating: "", count: requests.count)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: requests.count) { i in
            let a = (try? http(s.port, "POST", "/v1/chat/completions", json: requests[i])).map(answer) ?? "<failed>"
            lock.withLock { together[i] = a }
        }
        XCTAssertEqual(together, alone)
        XCTAssertTrue(alone[0].contains("Paris"), alone[0])
    }
}
