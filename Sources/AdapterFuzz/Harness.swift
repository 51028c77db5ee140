// One entry point per parser, taking the raw bytes of an untrusted file, for libFuzzer (the
// `llama-adapter-fuzz` executable built with -sanitize=fuzzer,address; scripts/fuzz.sh) and for the tests
// that replay the committed corpus and every crash input found so far. A harness returns normally for any
// input: a clean error is the expected answer to garbage; only a crash, trap, hang or sanitizer report is a bug.
import Foundation
import LlamaAdapter

/// The parsers that take files from strangers.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// torch.save zip + restricted unpickler, then every tensor read (`.pth`).
    case pth
    /// TorchScript archive (OpenAI CLIP `.pt`).
    case torchscript
    /// GGUF header, metadata, tensor table and tensor reads.
    case gguf
    /// safetensors header and tensor reads.
    case safetensors
    /// SentencePiece `tokenizer.model` protobuf, then encode/decode.
    case sentencepiece
    /// Hugging Face `tokenizer.json`, then encode/decode.
    case tokenizerJSON = "tokenizer_json"
    /// Jinja chat templates: parse and render a conversation.
    case jinja
    /// PNG/JPEG decoding and the CLIP preprocessing.
    case image
    /// Training data files (instruction JSON/JSONL, conversations, caption TSV).
    case trainingData = "training_data"
}

/// Runs the fuzz harnesses.
public enum FuzzHarness {
    /// Elements read per tensor at most (a valid file may declare big tensors; reading them all would only
    /// measure memory bandwidth).
    static let readLimit = 1 << 20

    /// Feeds `bytes` to `target`'s parser and exercises what it returns. Errors are swallowed: they are the
    /// parser's correct answer to malformed input.
    public static func run(_ target: FuzzTarget, _ bytes: UnsafeRawBufferPointer) {
        do {
            switch target {
            case .sentencepiece:
                let t = try SentencePieceTokenizer(data: [UInt8](bytes))
                exercise(t)
            case .jinja:
                let t = try ChatTemplate(source: String(decoding: bytes, as: UTF8.self))
                _ = try t.render(messages: [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi <b>"),
                                            ChatMessage(role: "assistant", content: "Hello."), ChatMessage(role: "user", content: "Why?")],
                                 addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
            case .image:
                let image = try ImageDecoder.decode(bytes: bytes, name: "fuzz")
                _ = try preprocessImage(image, channels: .bgr, size: 32)
            default:
                try withFile(bytes, suffix: suffix(target)) { path in try runFile(target, path) }
            }
        } catch {}
    }

    static func suffix(_ t: FuzzTarget) -> String {
        switch t {
        case .pth: return ".pth"
        case .torchscript: return ".pt"
        case .gguf: return ".gguf"
        case .safetensors: return ".safetensors"
        case .tokenizerJSON: return "/tokenizer.json"
        case .trainingData: return ".json"
        default: return ""
        }
    }

    static func runFile(_ target: FuzzTarget, _ path: String) throws {
        switch target {
        case .pth:
            readAll(try TorchCheckpoint(path: path))
        case .torchscript:
            readAll(try TorchScriptArchive.open(path: path))
        case .gguf:
            let g = try GGUFFile(path: path)
            readAll(g)
            if let t = try? makeTokenizer(gguf: g) { exercise(t) }
        case .safetensors:
            readAll(try SafetensorsFile(path: path))
        case .tokenizerJSON:
            exercise(try ByteLevelBPETokenizer(tokenizerJSON: path))
        case .trainingData:
            _ = try TrainingDataset.load(path: path)
            // The same bytes as JSON Lines and as a caption TSV take the other two readers' paths.
            for ext in [".jsonl", ".tsv"] {
                let other = path + ext
                try? FileManager.default.copyItem(atPath: path, toPath: other)
                defer { try? FileManager.default.removeItem(atPath: other) }
                _ = try? TrainingDataset.load(path: other)
            }
        default:
            break
        }
    }

    static func readAll(_ source: TensorSource) {
        for name in source.tensorNames {
            guard let info = source.info(name), info.shape.reduce(1, { $0.multipliedReportingOverflow(by: $1).partialValue }) <= readLimit,
                  let t = try? source.tensor(name) else { continue }
            _ = t.toFloatArray()
        }
        _ = source.metadata
    }

    static func exercise(_ t: any Tokenizer) {
        let ids = t.encode("Hello, wörld! 123 \u{1F600} <s> \n\t end")
        _ = t.decode(ids + [-1, t.vocabSize, Int.max])
        for id in [0, 1, t.vocabSize - 1, t.vocabSize] { _ = t.piece(id) }
    }

    /// Writes `bytes` to a fresh file in a private folder (RAM-backed when /dev/shm exists) for the parsers
    /// that map files, and removes it afterwards.
    static func withFile(_ bytes: UnsafeRawBufferPointer, suffix: String, _ body: (String) throws -> Void) throws {
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        let dir = base + "/llama-adapter-fuzz-\(getpid())"
        let path = dir + "/input" + suffix
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        try body(path)
    }
}
