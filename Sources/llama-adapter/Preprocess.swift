import ArgumentParser
import Foundation
import LlamaAdapter

/// `llama-adapter preprocess`: an encoder's image transform of one image, saved as a (3, H, W) float32 .npy.
struct Preprocess: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the normalised input tensor of an image as .npy: the official CLIP transform, or --clip's own.")

    @Option(help: "Image file (JPEG or PNG).")
    var image: String

    @Option(name: [.customLong("clip"), .customLong("vision")],
            help: "Use this encoder's transform (a CLIP .pt, or a CLIP, DINOv2 or SigLIP folder with its preprocessor_config.json).")
    var clip: String?

    @Option(help: "Channel order: bgr or rgb (default: bgr for CLIP, as the official cv2 pipeline; rgb for DINOv2 and SigLIP).")
    var channels: ChannelOrder?

    @Option(help: "Square input size of the official CLIP transform (224 for ViT-L/14); not with --clip.")
    var size: Int?

    @Option(help: "Output .npy path.")
    var out: String

    @Option(name: .customLong("max-image-pixels"), help: "Largest image accepted, in pixels (refused from its header, before decoding; default 8192x8192).")
    var maxImagePixels: Int?

    func run() throws {
        try applyImagePixelLimit(maxImagePixels)
        try AtomicFile.checkTarget(out)
        let tensor: Tensor
        if let clip {
            guard size == nil else { throw AdapterError.invalidArgument("--size cannot be used with --clip: the encoder's transform sets the size") }
            let encoder = try loadVisionEncoder(path: clip)
            tensor = try encoder.preprocess(try ImageDecoder.decode(path: image), channels: channels)
        } else {
            let size = self.size ?? 224
            guard size > 0, size <= 4096 else { throw AdapterError.invalidArgument("--size must be between 1 and 4096") }
            tensor = try preprocessImage(path: image, channels: channels ?? .bgr, size: size)
        }
        try NPY.write(tensor, to: out)
    }
}

/// `llama-adapter encode-image`: the features a visual adapter consumes, as a (tokens, width) float32 .npy.
struct EncodeImage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode-image",
        abstract: "Write an image's encoder features as a (tokens, width) float32 .npy.",
        discussion: """
        DINOv2 and SigLIP: last_hidden_state (after the final LayerNorm), as transformers computes it. CLIP: the \
        official LLaMA-Adapter features, ln_post on every token then the projection. --json prints the shape, \
        the encoder and the time taken.
        """)

    @Option(name: [.customLong("clip"), .customLong("vision")], help: "Vision encoder: CLIP .pt, or a CLIP, DINOv2 or SigLIP folder.")
    var clip: String

    @Option(help: "Image file (JPEG or PNG).")
    var image: String

    @Option(help: "Channel order: bgr or rgb (default: bgr for CLIP, rgb for DINOv2 and SigLIP).")
    var channels: ChannelOrder?

    @Option(help: "Output .npy path.")
    var out: String

    @Flag(help: "Print one JSON object describing the result.")
    var json = false

    @Option(help: "Threads (default: all cores).")
    var threads: Int?

    @Option(name: .customLong("max-image-pixels"), help: "Largest image accepted, in pixels (refused from its header, before decoding; default 8192x8192).")
    var maxImagePixels: Int?

    func run() throws {
        try applyImagePixelLimit(maxImagePixels)
        try AtomicFile.checkTarget(out)
        if let threads, threads < 1 || threads > 1024 { throw AdapterError.invalidArgument("--threads must be between 1 and 1024") }
        let pool = threads.map { ThreadPool(threads: $0) } ?? .shared
        let encoder = try loadVisionEncoder(path: clip)
        let decoded = try ImageDecoder.decode(path: image)
        let order = channels ?? encoder.defaultChannels
        let start = Date()
        let pixels = try encoder.preprocess(decoded, channels: order)
        let features = try encoder.encode(pixels, pool: pool)
        let ms = Date().timeIntervalSince(start) * 1000
        try NPY.write(features, to: out)
        if json {
            struct Report: Encodable { var encoder: String; var shape: [Int]; var channels: String; var input: [Int]; var patch_size: Int; var ms: Double; var out: String }
            try printJSON(Report(encoder: encoder.family.rawValue, shape: features.shape, channels: order.rawValue,
                                 input: [pixels.shape[1], pixels.shape[2]], patch_size: encoder.patchSize, ms: (ms * 10).rounded() / 10, out: out))
        }
    }
}
