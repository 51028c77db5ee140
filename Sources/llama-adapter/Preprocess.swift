import ArgumentParser
import Foundation
import LlamaAdapter

/// `llama-adapter preprocess`: the official CLIP transform of one image, saved as a (3, S, S) float32 .npy.
struct Preprocess: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write the normalised CLIP input tensor of an image as .npy.")

    @Option(help: "Image file (JPEG or PNG).")
    var image: String

    @Option(help: "Channel order: bgr (official cv2 pipeline) or rgb.")
    var channels: String = "bgr"

    @Option(help: "Square input size (224 for ViT-L/14).")
    var size: Int = 224

    @Option(help: "Output .npy path.")
    var out: String

    @Option(name: .customLong("max-image-pixels"), help: "Largest image accepted, in pixels (refused from its header, before decoding; default 8192x8192).")
    var maxImagePixels: Int?

    func run() throws {
        try applyImagePixelLimit(maxImagePixels)
        guard let order = ChannelOrder(rawValue: channels) else { throw AdapterError.invalidArgument("--channels must be bgr or rgb") }
        guard size > 0, size <= 4096 else { throw AdapterError.invalidArgument("--size must be between 1 and 4096") }
        let tensor = try preprocessImage(path: image, channels: order, size: size)
        try NPY.write(tensor, to: out)
    }
}
