import LlamaAdapter
import Foundation
import XCTest

/// Issue 10's catalogue: well over 150 corrupted variants of the fixtures, across every reader and many flags,
/// each run through the CLI under a 4 GiB address-space limit and a time limit. Every one must end with exactly
/// one `error:` line and exit status 1: no crash, no trap, no hang, no silent acceptance, no runaway allocation
/// (the limit turns one into a failure instead of swapping). The code-execution pickles must not run anything.
final class MalformedInputCatalogueTests: XCTestCase {
    struct Case {
        let name: String
        let args: [String]
    }

    static let marker = "/tmp/llama-adapter-hostile-payload-ran"
    /// Whether this test build runs under AddressSanitizer or ThreadSanitizer (so the CLI it runs does too).
    static let sanitized: Bool = {
        #if os(Linux)
        let all: UnsafeMutableRawPointer? = nil  // RTLD_DEFAULT
        #else
        let all = UnsafeMutableRawPointer(bitPattern: -2)
        #endif
        return dlsym(all, "__asan_init") != nil || dlsym(all, "__tsan_init") != nil
    }()
    static let addressSpaceKB = 4 << 20

    /// Runs the CLI with `ulimit -v` and a watchdog.
    static func runLimited(_ args: [String], seconds: Double = 60) throws -> CLIRunner.Run {
        let bin = try XCTUnwrap(CLIRunner.binary)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        var env = ProcessInfo.processInfo.environment
        if sanitized {
            // Sanitizer runtimes reserve terabytes of address space, so ulimit -v cannot apply; ASan's own cap on
            // a single allocation makes a runaway one fail instead (scripts/sanitize.sh).
            p.arguments = ["-c", "exec \"$0\" \"$@\"", bin.path] + args
            env["ASAN_OPTIONS"] = "detect_leaks=0:max_allocation_size_mb=2048:allocator_may_return_null=0"
        } else {
            p.arguments = ["-c", "ulimit -v \(addressSpaceKB); exec \"$0\" \"$@\"", bin.path] + args
        }
        env["LLAMA_ADAPTER_THREADS"] = "1"  // two catalogue runs at a time on two cores
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let watchdog = DispatchWorkItem { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds, execute: watchdog)
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        watchdog.cancel()
        return CLIRunner.Run(status: p.terminationReason == .uncaughtSignal ? 128 + p.terminationStatus : p.terminationStatus,
                             stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    // MARK: Building the variants

    let tiny = Fixtures.path("tiny_llama/model")
    let tok = Fixtures.path("tiny_llama/tokenizer.model")
    var dir: URL!

    func file(_ name: String, _ bytes: [UInt8]) throws -> String {
        let url = dir.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(bytes).write(to: url)
        return url.path
    }

    func bytes(_ fixture: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: Fixtures.root.appendingPathComponent(fixture))) }

    /// A copy of a fixture folder with `file` replaced by `content`.
    func folder(_ fixture: String, _ name: String, replacing file: String, with content: [UInt8]) throws -> String {
        let d = dir.appendingPathComponent(name)
        try FileManager.default.copyItem(at: Fixtures.root.appendingPathComponent(fixture), to: d)
        try Data(content).write(to: d.appendingPathComponent(file))
        return d.path
    }

    static func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    static func patch(_ b: [UInt8], at offset: Int, _ with: [UInt8]) -> [UInt8] {
        var c = b
        c.replaceSubrange(offset..<(offset + with.count), with: with)
        return c
    }

    static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ b: ArraySlice<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for x in b { c = crcTable[Int((c ^ UInt32(x)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    /// A PNG with its IHDR fields patched and the chunk's CRC made right again (so the decoder reads the values).
    static func png(_ b: [UInt8], width: UInt32? = nil, height: UInt32? = nil, depth: UInt8? = nil, colour: UInt8? = nil,
                    interlace: UInt8? = nil) -> [UInt8] {
        var c = b
        func be(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
        if let width { c.replaceSubrange(16..<20, with: be(width)) }
        if let height { c.replaceSubrange(20..<24, with: be(height)) }
        if let depth { c[24] = depth }
        if let colour { c[25] = colour }
        if let interlace { c[28] = interlace }
        c.replaceSubrange(29..<33, with: be(crc32(c[12..<29])))
        return c
    }

    func cases() throws -> [Case] {
        var all: [Case] = []
        func add(_ name: String, _ args: [String]) { all.append(Case(name: name, args: args)) }
        let scoreArgs = ["--prompt", "a", "--continuation", "b"]

        // 1. Malicious and malformed pickles (tools/reference/make_hostile_pth.py), inspected and loaded as adapters.
        let pthDir = Fixtures.root.appendingPathComponent("hostile/pth")
        let accepted: Set = ["ok.pth", "rank_9.pth", "int_keys.pth", "shape_2p40_by_0.pth"]  // valid pickles: inspect lists them
        for name in try FileManager.default.contentsOfDirectory(atPath: pthDir.path).sorted() where name.hasSuffix(".pth") {
            let path = pthDir.appendingPathComponent(name).path
            if !accepted.contains(name) { add("inspect pth/\(name)", ["inspect", path]) }
            add("adapter pth/\(name)", ["score", "--model", tiny, "--tokenizer", tok, "--adapter", path] + scoreArgs)
        }

        // 2. Truncations of every kind of file, at the start, inside headers, half-way and near the end.
        let truncatable: [(String, String, (String) throws -> [String])] = [
            ("gguf model", "tiny_llama/tiny_llama.f16.gguf.bin", { ["score", "--model", $0] + scoreArgs }),
            ("adapter", "tiny_adapter/adapter_bias.pth", { ["score", "--model", self.tiny, "--tokenizer", self.tok, "--clip", Fixtures.path("tiny_adapter/clip_tiny.pth"), "--adapter", $0] + scoreArgs }),
            ("torchscript clip", "tiny_adapter/clip_tiny.pt", { ["score", "--model", self.tiny, "--tokenizer", self.tok, "--adapter", Fixtures.path("tiny_adapter/adapter_bias.pth"),
                                                                  "--clip", $0, "--image", Fixtures.path("tiny_adapter/image.png")] + scoreArgs }),
            ("clip state dict", "tiny_adapter/clip_tiny.pth", { ["inspect", $0] }),
            ("sentencepiece", "tiny_llama/tokenizer.model", { ["tokenize", "--tokenizer", $0, "--text", "hello world"] }),
            ("tokenizer.json", "bpe/tiny_tokenizer.json", { ["tokenize", "--tokenizer", $0, "--text", "hello world"] }),
            ("png", "tiny_adapter/image.png", { ["preprocess", "--image", $0, "--out", self.dir.appendingPathComponent("o.npy").path] }),
            ("jpeg", "images/photo.jpg", { ["preprocess", "--image", $0, "--out", self.dir.appendingPathComponent("o.npy").path] }),
            ("safetensors", "safetensors/single.safetensors", { ["inspect", $0] }),
        ]
        for (kind, fixture, command) in truncatable {
            let b = try bytes(fixture)
            let ext = (fixture as NSString).pathExtension
            for cut in [0, 1, 8, 33, b.count / 2, b.count - 40] {
                let path = try file("trunc/\(kind.replacingOccurrences(of: " ", with: "_"))-\(cut).\(ext)", Array(b.prefix(cut)))
                add("\(kind) truncated to \(cut) of \(b.count) bytes", try command(path))
            }
        }
        // Model folders whose weights file is cut.
        let pth = try bytes("tiny_llama/model/consolidated.00.pth")
        for cut in [100, pth.count / 2, pth.count - 30] {
            add("official folder, consolidated.00.pth cut to \(cut)",
                ["score", "--model", try folder("tiny_llama/model", "official-cut-\(cut)", replacing: "consolidated.00.pth", with: Array(pth.prefix(cut))), "--tokenizer", tok] + scoreArgs)
        }
        let st = try bytes("tiny_llama/hf/model.safetensors")
        for cut in [6, 200, st.count / 2, st.count - 10] {
            add("HF folder, model.safetensors cut to \(cut)",
                ["score", "--model", try folder("tiny_llama/hf", "hf-cut-\(cut)", replacing: "model.safetensors", with: Array(st.prefix(cut))), "--tokenizer", tok] + scoreArgs)
        }

        // 3. GGUF headers that lie.
        let gguf = try bytes("tiny_llama/tiny_llama.f16.gguf.bin")
        let ggufPatches: [(String, Int, [UInt8])] = [
            ("bad magic", 0, Array("GGUX".utf8)), ("version 99", 4, Self.le(99, 4)), ("version 0", 4, Self.le(0, 4)),
            ("2^62 tensors", 8, Self.le(1 << 62, 8)), ("2^62 metadata keys", 16, Self.le(1 << 62, 8)),
            ("metadata key count 0", 16, Self.le(0, 8)), ("first key 2^60 bytes long", 24, Self.le(1 << 60, 8)),
            ("first key 0 bytes long", 24, Self.le(0, 8)), ("tensor count 2^31", 8, Self.le(1 << 31, 8)),
        ]
        for (what, at, with) in ggufPatches {
            add("gguf: \(what)", ["score", "--model", try file("gguf/\(at)-\(what.count).gguf", Self.patch(gguf, at: at, with)), "--tokenizer", tok] + scoreArgs)
        }
        let keyLength = Int(gguf[24]) | Int(gguf[25]) << 8
        add("gguf: first value type 99", ["score", "--model", try file("gguf/type99.gguf", Self.patch(gguf, at: 32 + keyLength, Self.le(99, 4)))] + scoreArgs)
        add("gguf: first value type 9 (array) with 2^62 items",
            ["score", "--model", try file("gguf/array.gguf", Self.patch(gguf, at: 32 + keyLength, Self.le(9, 4) + Self.le(8, 4) + Self.le(1 << 62, 8)))] + scoreArgs)

        // Found by the GGUF fuzzer: dimensions whose product is 0 in ggml's order but overflows in PyTorch's
        // (the reversed order Tensor and inspect multiplied in); loading trapped (inspect: see the test below).
        let reversedDims = try file("gguf/dims-reversed.gguf", try bytes("fuzz/gguf/dims-overflow-reversed.gguf"))
        add("gguf: dimensions overflowing only in PyTorch order, score", ["score", "--model", reversedDims, "--tokenizer", tok] + scoreArgs)

        // 4. safetensors headers that lie.
        let single = try bytes("safetensors/single.safetensors")
        let headerLength = Int(single[0]) | Int(single[1]) << 8
        let header = String(decoding: single[8..<(8 + headerLength)], as: UTF8.self)
        let payload = Array(single[(8 + headerLength)...])
        func safetensors(_ name: String, header h: String, length: UInt64? = nil, data: [UInt8]? = nil) throws -> String {
            let hb = Array(h.utf8)
            return try file("st/\(name).safetensors", Self.le(length ?? UInt64(hb.count), 8) + hb + (data ?? payload))
        }
        let stCases: [(String, String, UInt64?)] = [
            ("header length 2^60", header, 1 << 60), ("header length 0", header, 0), ("header longer than the file", header, UInt64(single.count)),
            ("header not JSON", String(repeating: "x", count: headerLength), nil), ("header a JSON array", "[1,2,3]", nil),
            ("unknown dtype", header.replacingOccurrences(of: "\"F32\"", with: "\"X9\""), nil),
            ("offsets past the end", header.replacingOccurrences(of: "\"data_offsets\":[0,", with: "\"data_offsets\":[90000,"), nil),
            ("negative shape", header.replacingOccurrences(of: "\"shape\":[", with: "\"shape\":[-1,"), nil),
            ("shape larger than its bytes", header.replacingOccurrences(of: "\"shape\":[", with: "\"shape\":[1000000,"), nil),
            ("shape overflowing", header.replacingOccurrences(of: "\"shape\":[", with: "\"shape\":[4611686018427387904,4,"), nil),
            ("metadata not strings", header.replacingOccurrences(of: "\"format\":\"pt\"", with: "\"format\":7"), nil),
        ]
        for (i, (what, h, len)) in stCases.enumerated() { add("safetensors: \(what)", ["inspect", try safetensors("c\(i)", header: h, length: len)]) }

        // 5. Zip structures that lie (an adapter .pth).
        let zip = try bytes("tiny_adapter/adapter_bias.pth")
        let eocd = try XCTUnwrap((0...(zip.count - 22)).reversed().first { zip[$0] == 0x50 && zip[$0 + 1] == 0x4B && zip[$0 + 2] == 5 && zip[$0 + 3] == 6 })
        let cd = Int(zip[eocd + 16]) | Int(zip[eocd + 17]) << 8 | Int(zip[eocd + 18]) << 16 | Int(zip[eocd + 19]) << 24
        // torch.save writes ZIP64 end records, which readers (miniz, ours) prefer to the 32-bit fields.
        let eocd64 = try XCTUnwrap((0...(zip.count - 56)).reversed().first { zip[$0] == 0x50 && zip[$0 + 1] == 0x4B && zip[$0 + 2] == 6 && zip[$0 + 3] == 6 })
        let zipCases: [(String, Int, [UInt8])] = [
            ("ZIP64 central directory 2^62 bytes long", eocd64 + 40, Self.le(1 << 62, 8)), ("ZIP64 entry count 2^40", eocd64 + 32, Self.le(1 << 40, 8)),
            ("ZIP64 record signature", eocd64, [0, 0, 0, 0]),
            ("end record signature", eocd, [0, 0, 0, 0]),
            ("central directory signature", cd, [0, 0, 0, 0]), ("compression method 99", cd + 10, Self.le(99, 2)),
            ("first local header signature", 0, [0, 0, 0, 0]), ("file name 65535 bytes", cd + 28, Self.le(0xFFFF, 2)),
            ("local header offset past the end", cd + 42, Self.le(0x7FFF_FFF0, 4)), ("entry size 4 GiB", cd + 20, Self.le(0xFFFF_FFF0, 4) + Self.le(0xFFFF_FFF0, 4)),
        ]
        for (what, at, with) in zipCases {
            add("zip: \(what)", ["score", "--model", tiny, "--tokenizer", tok, "--clip", Fixtures.path("tiny_adapter/clip_tiny.pth"),
                                  "--adapter", try file("zip/\(at)-\(what.count).pth", Self.patch(zip, at: at, with))] + scoreArgs)
        }

        // 6. SentencePiece protobufs.
        let spCases: [(String, [UInt8])] = [
            ("varint of 11 bytes", [0x0A] + [UInt8](repeating: 0xFF, count: 11)), ("piece 2^40 bytes long", [0x0A, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20]),
            ("wire type 7", [0x0F, 0x01, 0x02]), ("no pieces", [0x1A, 0x00]), ("random text", Array("this is not a model".utf8)),
            ("one piece and no trainer_spec (UNIGRAM)", [0x0A, 0x05, 0x0A, 0x01, 0x61, 0x10, 0x01]),
        ]
        for (i, (what, b)) in spCases.enumerated() {
            add("sentencepiece: \(what)", ["tokenize", "--tokenizer", try file("sp/\(i).model", b), "--text", "hello"])
        }

        // 7. tokenizer.json.
        let tj = try JSONSerialization.jsonObject(with: Data(bytes("bpe/tiny_tokenizer.json"))) as! [String: Any]
        func tokJSON(_ name: String, _ edit: (inout [String: Any], inout [String: Any]) -> Void) throws -> String {
            var root = tj
            var model = root["model"] as! [String: Any]
            edit(&root, &model)
            if !(root["model"] is NSNull) { root["model"] = model }
            return try file("tj/\(name)/tokenizer.json", [UInt8](try JSONSerialization.data(withJSONObject: root)))
        }
        let tjCases: [(String, (inout [String: Any], inout [String: Any]) -> Void)] = [
            ("id Int.max", { _, m in var v = m["vocab"] as! [String: Any]; v["zz"] = Int.max; m["vocab"] = v }),
            ("negative id", { _, m in var v = m["vocab"] as! [String: Any]; v["zz"] = -1; m["vocab"] = v }),
            ("no model", { r, _ in r["model"] = NSNull() }), ("vocab an array", { _, m in m["vocab"] = [1, 2] }),
            ("merge of unknown tokens", { _, m in m["merges"] = [["\u{1}q", "\u{2}w"]] }),
            ("model type WordPiece", { _, m in m["type"] = "WordPiece" }),
            ("added token id 2^40", { r, _ in r["added_tokens"] = [["id": 1 << 40, "content": "<x>", "special": true]] }),
            ("merges a number", { _, m in m["merges"] = 5 }),
        ]
        for (i, (what, edit)) in tjCases.enumerated() {
            add("tokenizer.json: \(what)", ["tokenize", "--tokenizer", try tokJSON("\(i)", edit), "--text", "hello world"])
        }
        add("tokenizer.json: not JSON", ["tokenize", "--tokenizer", try file("tj/bad/tokenizer.json", Array("{\"model\": [".utf8)), "--text", "x"])

        // 8. Images.
        let png = try bytes("tiny_adapter/image.png")
        let out = dir.appendingPathComponent("o.npy").path
        let pngCases: [(String, [UInt8])] = [
            ("width 0", Self.png(png, width: 0)), ("2^31-1 x 2^31-1 pixels", Self.png(png, width: 0x7FFF_FFFF, height: 0x7FFF_FFFF)),
            ("65535 x 65535 pixels", Self.png(png, width: 65535, height: 65535)), ("bit depth 3", Self.png(png, depth: 3)),
            ("colour type 9", Self.png(png, colour: 9)), ("interlace method 7", Self.png(png, interlace: 7)),
            ("IHDR checksum wrong", Self.patch(png, at: 29, [0, 0, 0, 0])), ("IDAT damaged", Self.patch(png, at: png.count / 2, [UInt8](repeating: 0xAB, count: 64))),
            ("text with a .png name", Array("not an image".utf8)),
        ]
        for (i, (what, b)) in pngCases.enumerated() { add("png: \(what)", ["preprocess", "--image", try file("img/\(i).png", b), "--out", out]) }
        let jpg = try bytes("images/photo.jpg")
        let sof = try XCTUnwrap((0..<(jpg.count - 9)).first { jpg[$0] == 0xFF && (jpg[$0 + 1] == 0xC0 || jpg[$0 + 1] == 0xC2) })
        let jpgCases: [(String, [UInt8])] = [
            ("height 0", Self.patch(jpg, at: sof + 5, [0, 0])), ("65500 x 65500 pixels", Self.patch(jpg, at: sof + 5, [0xFF, 0xDC, 0xFF, 0xDC])),
            ("5 components", Self.patch(jpg, at: sof + 9, [5])), ("precision 3", Self.patch(jpg, at: sof + 4, [3])),
            ("only the SOI marker", [0xFF, 0xD8]),
        ]
        for (i, (what, b)) in jpgCases.enumerated() { add("jpeg: \(what)", ["preprocess", "--image", try file("img/\(i).jpg", b), "--out", out]) }
        add("image is a folder", ["preprocess", "--image", dir.path, "--out", out])
        add("strip 1x65000 png", ["preprocess", "--image", Fixtures.path("images/strip_1x65000.png"), "--out", out])

        // 9. Model configurations.
        let params = try JSONSerialization.jsonObject(with: Data(bytes("tiny_llama/model/params.json"))) as! [String: Any]
        let paramCases: [(String, Any)] = [("multiple_of", 0), ("ffn_dim_multiplier", 1e300), ("n_heads", 0), ("norm_eps", -1), ("dim", -64),
                                            ("n_layers", 1 << 40), ("n_heads", 3), ("dim", "64"), ("n_kv_heads", 3), ("rope_theta", -1)]
        for (i, (key, value)) in paramCases.enumerated() {
            var p = params
            p[key] = value
            let folderPath = try folder("tiny_llama/model", "params-\(i)", replacing: "params.json", with: [UInt8](try JSONSerialization.data(withJSONObject: p)))
            add("params.json \(key): \(value)", ["score", "--model", folderPath, "--tokenizer", tok] + scoreArgs)
        }
        add("params.json not JSON", ["score", "--model", try folder("tiny_llama/model", "params-bad", replacing: "params.json", with: Array("{dim".utf8)), "--tokenizer", tok] + scoreArgs)
        let config = try JSONSerialization.jsonObject(with: Data(bytes("tiny_llama/hf/config.json"))) as! [String: Any]
        let configCases: [(String, Any)] = [("max_position_embeddings", -5), ("head_dim", 1 << 62), ("num_hidden_layers", 1 << 40), ("vocab_size", 0),
                                             ("hidden_size", 0), ("num_key_value_heads", 3), ("intermediate_size", -1), ("rms_norm_eps", "x")]
        for (i, (key, value)) in configCases.enumerated() {
            var c = config
            c[key] = value
            let folderPath = try folder("tiny_llama/hf", "config-\(i)", replacing: "config.json", with: [UInt8](try JSONSerialization.data(withJSONObject: c)))
            add("config.json \(key): \(value)", ["score", "--model", folderPath, "--tokenizer", tok] + scoreArgs)
        }

        // 10. Training data.
        let train = ["finetune", "--model", tiny, "--tokenizer", tok, "--bias", "--visual", "--clip", Fixtures.path("tiny_adapter/clip_tiny.pth"),
                     "--v-embed-dim", "32", "--v-num-heads", "4", "--v-depth", "1", "--steps", "1", "--batch-size", "1", "--max-words", "64",
                     "--out", dir.appendingPathComponent("t.pth").path, "--data"]
        let dataCases: [(String, String, String)] = [
            ("not JSON", "d.json", "[{"), ("empty list", "d.json", "[]"), ("output a number", "d.json", #"[{"instruction": "a", "output": 5}]"#),
            ("no instruction", "d.json", #"[{"output": "x"}]"#), ("missing image", "d.json", #"[{"image": "nowhere.png", "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}]"#),
            ("JSONL with a broken line", "d.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n{oops\n"),
            ("TSV with one column", "d.tsv", "url\tcaption\nonly-one-field\n"), ("a number", "d.json", "42"),
            ("conversation without turns", "d.json", #"[{"image": "x.png", "conversations": []}]"#),
        ]
        for (i, (what, name, text)) in dataCases.enumerated() {
            add("training data: \(what)", train + [try file("data\(i)/\(name)", Array(text.utf8))])
        }

        // 11. Flags.
        let gen = ["generate", "--model", tiny, "--tokenizer", tok, "--prompt", "hi"]
        let flagCases: [(String, [String])] = [
            ("--max-seq-len 1000000000", gen + ["--max-seq-len", "1000000000"]), ("--max-seq-len -1", gen + ["--max-seq-len=-1"]),
            ("--max-seq-len 0", gen + ["--max-seq-len", "0"]), ("--max-seq-len 2^63-1", gen + ["--max-seq-len", "9223372036854775807"]),
            ("--temperature -1", gen + ["--temperature=-1"]), ("--top-p 2", gen + ["--top-p", "2"]), ("--temperature nan", gen + ["--temperature", "nan"]),
            ("--max-new-tokens -5", gen + ["--max-new-tokens=-5"]), ("--max-new-tokens 2^64", gen + ["--max-new-tokens", "18446744073709551616"]),
            ("bench --decode-tokens 2^63-1", ["bench", "--decode-tokens", "9223372036854775807"]),
            ("bench --prompt-tokens 0", ["bench", "--prompt-tokens", "0"]), ("bench --threads 0", ["bench", "--threads", "0"]),
            ("finetune --early-layers -1", ["finetune", "--model", tiny, "--tokenizer", tok, "--adapter", Fixtures.path("tiny_adapter/adapter_bias.pth"),
                                           "--clip", Fixtures.path("tiny_adapter/clip_tiny.pth"), "--phase", "joint", "--data", Fixtures.path("training/data.json"),
                                           "--caption-data", Fixtures.path("training/data.json"), "--early-layers=-1", "--steps", "1", "--out", dir.appendingPathComponent("e.pth").path]),
            ("finetune --batch-size 0", train.dropLast() + ["--batch-size", "0", "--data", Fixtures.path("training/data.json")]),
            ("finetune --lr nan", train.dropLast() + ["--lr", "nan", "--data", Fixtures.path("training/data.json")]),
            ("finetune --steps 0", train.dropLast() + ["--steps", "0", "--data", Fixtures.path("training/data.json")]),
            ("finetune --max-words 1", train.dropLast() + ["--max-words", "1", "--data", Fixtures.path("training/data.json")]),
            ("serve --port 70000", ["serve", "--model", tiny, "--tokenizer", tok, "--port", "70000"]),
            ("serve --parallel 0", ["serve", "--model", tiny, "--tokenizer", tok, "--parallel", "0"]),
            ("--quantize q3", gen + ["--quantize", "q3"]),
            ("a visual adapter without --clip", gen + ["--image", Fixtures.path("tiny_adapter/image.png"), "--adapter", Fixtures.path("tiny_adapter/adapter_lora.pth")]),
            ("finetune --out a device (refused before training)", train.dropLast(3) + ["--out", "/dev/null", "--data", Fixtures.path("training/data.json")]),
            ("finetune --out in a missing folder", train.dropLast(3) + ["--out", "/nonexistent-folder/x.pth", "--data", Fixtures.path("training/data.json")]),
            ("--max-image-pixels 0", ["preprocess", "--image", Fixtures.path("tiny_adapter/image.png"), "--out", out, "--max-image-pixels", "0"]),
            ("image over --max-image-pixels", ["preprocess", "--image", Fixtures.path("tiny_adapter/image.png"), "--out", out, "--max-image-pixels", "1000"]),
            ("preprocess --out a device", ["preprocess", "--image", Fixtures.path("tiny_adapter/image.png"), "--out", "/dev/null"]),
            ("preprocess --out a folder", ["preprocess", "--image", Fixtures.path("tiny_adapter/image.png"), "--out", dir.path]),
        ]
        for (what, args) in flagCases { add("flag \(what)", args) }

        // 12. Special files where a model, adapter or image is expected.
        let fifo = dir.appendingPathComponent("fifo").path
        mkfifo(fifo, 0o600)
        add("fifo as --model", ["score", "--model", fifo] + scoreArgs)
        add("fifo as --adapter", ["score", "--model", tiny, "--tokenizer", tok, "--adapter", fifo] + scoreArgs)
        add("fifo to inspect", ["inspect", fifo])
        add("fifo as --tokenizer", ["tokenize", "--tokenizer", fifo, "--text", "x"])
        add("fifo as --image", ["preprocess", "--image", fifo, "--out", out])
        add("/dev/zero as --model", ["score", "--model", "/dev/zero"] + scoreArgs)
        add("a folder as --adapter", ["score", "--model", tiny, "--tokenizer", tok, "--adapter", dir.path] + scoreArgs)
        return all
    }

    func testEveryMalformedInputEndsInOneErrorLine() throws {
        dir = try makeTemporaryDirectory()
        try? FileManager.default.removeItem(atPath: Self.marker)
        let all = try cases()
        XCTAssertGreaterThanOrEqual(all.count, 150)
        var results = [CLIRunner.Run?](repeating: nil, count: all.count)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: 2) { worker in
            for i in stride(from: worker, to: all.count, by: 2) {
                let r = try? Self.runLimited(all[i].args)
                lock.lock(); results[i] = r; lock.unlock()
            }
        }
        var failures: [String] = []
        for (c, r) in zip(all, results) {
            guard let r else { failures.append("\(c.name): did not run"); continue }
            let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: true)
            if r.status != 1 || lines.count != 1 || !r.stderr.hasPrefix("error: ") {
                failures.append("\(c.name): status \(r.status), stderr \(r.stderr.prefix(300).debugDescription)")
            }
        }
        // LLAMA_ADAPTER_CATALOGUE_LOG=FILE keeps every case's error line, to read what users would see.
        if let log = ProcessInfo.processInfo.environment["LLAMA_ADAPTER_CATALOGUE_LOG"] {
            let text = zip(all, results).map { "\($0.name)\t\($1?.stderr.trimmingCharacters(in: .newlines) ?? "-")" }.joined(separator: "\n")
            try text.write(toFile: log, atomically: true, encoding: .utf8)
        }
        XCTAssertEqual(failures, [], "\(failures.count) of \(all.count) malformed inputs")
        XCTAssertFalse(FileManager.default.fileExists(atPath: Self.marker), "a pickle payload ran")
    }

    func testAnInterruptedRunLeavesNoTemporaryFileAndAResumableState() throws {
        let dir = try makeTemporaryDirectory()
        let state = dir.appendingPathComponent("state.pth").path
        let data = dir.appendingPathComponent("data.json").path
        try Data(#"[{"instruction": "Say hi.", "input": "", "output": "Hi there."}, {"instruction": "Count.", "input": "", "output": "One two three."}]"#.utf8)
            .write(to: URL(fileURLWithPath: data))
        let bin = try XCTUnwrap(CLIRunner.binary)
        let p = Process()
        p.executableURL = bin
        p.arguments = ["finetune", "--model", tiny, "--tokenizer", tok, "--bias", "--data", data, "--batch-size", "2",
                       "--steps", "100000", "--max-words", "160", "--out", dir.appendingPathComponent("o.pth").path, "--state", state,
                       "--save-every", "1", "--log-json"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        var seen = Data()
        while seen.split(separator: UInt8(ascii: "\n")).count < 4 {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen += chunk
        }
        kill(p.processIdentifier, SIGINT)
        _ = out.fileHandleForReading.readDataToEndOfFile()
        let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 1)
        XCTAssertEqual(e, "error: interrupted; the last saved --state is intact (continue with --resume)\n")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp-") }, [])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("o.pth").path))
        // The state it left resumes.
        let c = try ModelContainer.load(ModelConfiguration(model: tiny, tokenizer: tok))
        var o = TrainingOptions()
        o.batchSize = 2; o.steps = 100000; o.maxWords = 160
        var spec = AdapterSpec(); spec.bias = true
        let t = try Trainer(base: c.model, store: try ParameterStore.fresh(spec, model: c.model, clipDim: nil, seed: 0), tokenizer: c.tokenizer, clip: nil,
                            data: try TrainingDataset.load(path: data), captionData: nil, options: o)
        let history = try t.loadState(from: state)
        XCTAssertGreaterThanOrEqual(history.count, 3)
    }

    func testInspectListsTheFuzzersZeroElementTensorOnOneLineEach() throws {
        // The fuzzer's file is a well-formed GGUF whose third tensor has 0 elements but dimensions whose product,
        // taken in PyTorch's order, overflows (inspect trapped), and whose name holds control characters.
        let path = Fixtures.path("fuzz/gguf/dims-overflow-reversed.gguf")
        let r = try Self.runLimited(["inspect", path])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n")
        XCTAssertEqual(lines.first, "\(path): gguf, 3 tensors, 6 parameters")
        XCTAssertTrue(lines.contains { $0.hasPrefix("i32.unsuppo\\x03\\x00\\x00\\x00  f32    [1030792151040, 17592186044416, 0, 0]") },
                      r.stdout)
        XCTAssertFalse(r.stdout.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" })
        let json = try Self.runLimited(["inspect", "--json", path])
        XCTAssertEqual(json.status, 0, json.stderr)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(object["parameter_count"] as? Int, 6)
    }

    func testTheValidControlsAreAccepted() throws {
        // The catalogue's base files load, so its errors come from the corruption, not from the setup.
        for args in [["inspect", Fixtures.path("hostile/pth/ok.pth")], ["inspect", Fixtures.path("safetensors/single.safetensors")],
                     ["score", "--model", Fixtures.path("tiny_llama/tiny_llama.f16.gguf.bin"), "--prompt", "a", "--continuation", "b"],
                     ["tokenize", "--tokenizer", Fixtures.path("bpe/tiny_tokenizer.json"), "--text", "hello world"],
                     ["preprocess", "--image", Fixtures.path("images/photo.jpg"), "--out", try makeTemporaryDirectory().appendingPathComponent("p.npy").path]] {
            let r = try Self.runLimited(args)
            XCTAssertEqual(r.status, 0, "\(args): \(r.stderr)")
        }
    }
}
