import Foundation
import AdapterCore

/// What a path holds, recognised by content (magic bytes, archive entries, marker files), never by the
/// name's extension. The one place formats are told apart; loaders and `inspect` switch on its result.
public enum FileFormat: String, Sendable, Equatable {
    /// Official Meta layout: a folder with `params.json` and `consolidated.NN.pth`.
    case metaFolder = "meta"
    /// Hugging Face layout: a folder with `config.json` and safetensors.
    case huggingFaceFolder = "huggingface"
    /// llama.cpp GGUF (magic `GGUF`).
    case gguf
    /// One safetensors file (u64 header length, then a JSON object).
    case safetensors
    /// A `torch.save` zip checkpoint (`.pth`).
    case pytorch
    /// A `torch.jit.save` archive (zip with `constants.pkl`), such as OpenAI CLIP's `.pt`.
    case torchScript = "torchscript"
    /// A pickle outside a zip (pre-1.6 `torch.save` or plain pickle; not supported as a checkpoint).
    case rawPickle = "pickle"
    /// A Hugging Face `tokenizer.json` (JSON object).
    case json
    /// A SentencePiece `tokenizer.model` (protobuf; recognised as "anything else" by tokenizer callers).
    case other

    /// Recognises `path`. Throws `AdapterError.io` for a missing path or one that is not a regular file
    /// or folder (FIFOs and devices are refused before they can block a read).
    public static func detect(path: String) throws -> FileFormat {
        var st = stat()
        guard stat(path, &st) == 0 else { throw AdapterError.io("\(path) does not exist") }
        let kind = st.st_mode & S_IFMT
        if kind == S_IFDIR {
            let fm = FileManager.default
            if fm.fileExists(atPath: path + "/params.json") { return .metaFolder }
            if fm.fileExists(atPath: path + "/config.json") { return .huggingFaceFolder }
            throw AdapterError.format("\(path) is not a model folder: no params.json (official LLaMA layout) or config.json (Hugging Face)")
        }
        guard kind == S_IFREG else { throw AdapterError.io("\(path) is not a regular file") }
        guard let h = FileHandle(forReadingAtPath: path) else { throw AdapterError.io("cannot read \(path)") }
        defer { try? h.close() }
        let head = [UInt8]((try? h.read(upToCount: 16)) ?? Data())
        if head.starts(with: Array("GGUF".utf8)) { return .gguf }
        if head.starts(with: [0x50, 0x4B, 0x03, 0x04]) || head.starts(with: [0x50, 0x4B, 0x05, 0x06]) {
            let archive = try ZipArchive(file: try MappedFile(path: path))
            return archive.entries.contains { $0.name == "constants.pkl" || $0.name.hasSuffix("/constants.pkl") } ? .torchScript : .pytorch
        }
        if head.first == 0x80 { return .rawPickle }
        if head.count >= 9 {
            // safetensors: little-endian u64 header length, then '{'.
            var n: UInt64 = 0
            for i in (0..<8).reversed() { n = n << 8 | UInt64(head[i]) }
            if head[8] == UInt8(ascii: "{"), n >= 2, n < UInt64(st.st_size) { return .safetensors }
        }
        if let c = head.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }), c == UInt8(ascii: "{") { return .json }
        return .other
    }

    /// Opens a file or folder of named tensors in whatever supported format it is.
    public static func openTensors(path: String) throws -> (TensorSource, FileFormat) {
        let format = try detect(path: path)
        switch format {
        case .metaFolder: return (try MetaShards(directory: path), format)
        case .huggingFaceFolder: return (try SafetensorsFolder(path: path), format)
        case .gguf: return (try GGUFFile(path: path), format)
        case .safetensors: return (try SafetensorsFile(path: path), format)
        case .pytorch: return (try TorchCheckpoint(path: path), format)
        case .torchScript: return (try TorchScriptArchive.open(path: path), format)
        case .rawPickle: return (try TorchCheckpoint(path: path), format)  // its loader names the problem
        case .json, .other: throw AdapterError.unsupported("\(path): not a tensor file (expected .pth, .pt, .gguf, .safetensors or a model folder)")
        }
    }
}
