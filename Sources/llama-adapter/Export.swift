import ArgumentParser
import Foundation
import LlamaAdapter

/// `export`: fold a text-only adapter into a GGUF that llama.cpp runs.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fold a trained text-only adapter (Eq. 1 bias and scale, norms) into a GGUF llama.cpp runs unchanged.")

    @Option(help: "Base model (.gguf).")
    var model: String

    @Option(help: "Trained adapter (.pth or .safetensors).")
    var adapter: String

    @Option(help: "Merged GGUF to write.")
    var out: String

    func run() throws {
        try AtomicFile.checkTarget(out)
        let loaded = try ModelLoader.load(path: model)
        let a = try AdapterWeights.load(path: adapter, model: loaded.model.config)
        let r = try exportMergedGGUF(basePath: model, adapter: a, to: out)
        var line = "wrote \(out): \(r.scaledMatrices) matrices scaled, \(r.loraMerged) LoRA merged (as f16), \(r.biases) biases added, \(r.norms) norms replaced"
        if r.roundedMatrices > 0 { line += " (\(r.roundedMatrices) scaled in their stored type: f16 block scales re-rounded, not bit-exact)" }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
