// The seam between images and the adapter: one protocol over the vision transformers the visual branch can
// sit on (OpenAI CLIP as the official model uses it, Hugging Face DINOv2 and SigLIP), chosen by content.
import Foundation
import CoreFoundation
import AdapterCore
import AdapterFormats

/// Which vision transformer family an encoder belongs to.
public enum VisionFamily: String, Sendable {
    /// OpenAI CLIP ViT (`.pt`, state dicts, Hugging Face `CLIPVisionModel` folders).
    case clip
    /// Meta's DINOv2 (Hugging Face `Dinov2Model`).
    case dinov2
    /// Google's SigLIP vision tower (Hugging Face `SiglipVisionModel` / `SiglipModel`).
    case siglip
}

/// A frozen image encoder: its preprocessing and the forward that turns a preprocessed image into the
/// `(tokens, outputDim)` features the adapter's `clip_proj` consumes.
public protocol VisionEncoder: Sendable {
    /// The family (decides defaults such as the channel order).
    var family: VisionFamily { get }
    /// The image transform (channel order included) this encoder was trained with.
    var preprocessor: ImagePreprocessor { get }
    /// Patch side in pixels.
    var patchSize: Int { get }
    /// Width of the output features.
    var outputDim: Int { get }
    /// Runs the tower on a preprocessed `[3, H, W]` image; returns `[tokens, outputDim]` f32.
    func encode(_ pixels: Tensor, pool: ThreadPool) throws -> Tensor
}

extension VisionEncoder {
    /// The channel order the encoder expects unless told otherwise: BGR for CLIP (what the official
    /// LLaMA-Adapter feeds it), RGB for the others.
    public var defaultChannels: ChannelOrder { family == .clip ? .bgr : .rgb }

    /// (height, width) of the input tensor for an image of any size, when the transform fixes it; else the
    /// size a `width` x `height` image takes.
    public func inputSize(width: Int, height: Int) -> (height: Int, width: Int) {
        preprocessor.outputSize(width: width, height: height)
    }

    /// The blank input (all zeros: what the official training feeds text-only samples) at the transform's
    /// fixed size (a square of the shortest edge when the transform keeps the aspect ratio).
    public func blankPixels() -> Tensor {
        let (h, w) = preprocessor.fixedOutputSize ?? inputSize(width: 1, height: 1)
        return Tensor(zeros: [3, h, w])
    }

    /// Decodes nothing: preprocesses `image` in `channels` order (nil: the encoder's default) and encodes it.
    public func encode(image: RGBImage, channels: ChannelOrder? = nil, pool: ThreadPool = .shared) throws -> Tensor {
        try encode(preprocess(image, channels: channels), pool: pool)
    }

    /// The normalised `[3, H, W]` tensor of `image` in `channels` order (nil: the encoder's default).
    public func preprocess(_ image: RGBImage, channels: ChannelOrder? = nil) throws -> Tensor {
        try preprocessor.with(channels: channels ?? defaultChannels)(image)
    }
}

/// Opens a vision encoder by content: a folder (or safetensors file) whose `config.json` names a `model_type`
/// of `clip`/`clip_vision_model`, `dinov2`, or `siglip`/`siglip_vision_model`; or an OpenAI CLIP `.pt`
/// (TorchScript) or a state dict with `visual.*` names.
public func loadVisionEncoder(path: String) throws -> any VisionEncoder {
    guard FileManager.default.fileExists(atPath: path) else { throw AdapterError.io("vision encoder \(path) does not exist") }
    var isDir: ObjCBool = false
    FileManager.default.fileExists(atPath: path, isDirectory: &isDir)
    let folder = isDir.boolValue ? path : (path as NSString).deletingLastPathComponent
    let configPath = folder + "/config.json"
    let format = try FileFormat.detect(path: path)
    guard format == .huggingFaceFolder || format == .safetensors, let data = FileManager.default.contents(atPath: configPath) else {
        return try CLIPVisionEncoder.load(path: path)
    }
    let config = try VisionConfig.read(data, path: configPath)
    let preprocessorPath = folder + "/preprocessor_config.json"
    let hasPreprocessor = FileManager.default.fileExists(atPath: preprocessorPath)
    switch config.modelType {
    case "dinov2":
        let pre = hasPreprocessor
            ? try ImagePreprocessor.huggingFace(configPath: preprocessorPath, squareByDefault: false, channels: .rgb)
            : ImagePreprocessor.dinov2Default
        return try ViTEncoder.dinov2(try SafetensorsFolder(path: path), config: config, preprocessor: pre, source: path)
    case "siglip", "siglip_vision_model":
        let pre = hasPreprocessor
            ? try ImagePreprocessor.huggingFace(configPath: preprocessorPath, squareByDefault: true, channels: .rgb)
            : ImagePreprocessor.siglipDefault(size: config.imageSize ?? 224)
        return try ViTEncoder.siglip(try SafetensorsFolder(path: path), config: config, preprocessor: pre, source: path)
    case "clip", "clip_vision_model", nil:
        var encoder = try CLIPVisionEncoder.load(path: path)
        if hasPreprocessor {
            encoder.preprocessor = try ImagePreprocessor.huggingFace(configPath: preprocessorPath, squareByDefault: false, channels: .bgr)
        }
        return encoder
    case let other?:
        throw AdapterError.unsupported("\(configPath): vision model_type '\(other)' is not supported (clip, dinov2, siglip)")
    }
}

/// The keys of a vision `config.json` this project reads; a `CLIPModel`/`SiglipModel` config nests the tower's
/// keys under `vision_config`.
struct VisionConfig {
    var modelType: String?
    var hiddenSize: Int?, heads: Int?, layers: Int?, patchSize: Int?, imageSize: Int?
    var eps: Double?, hiddenAct: String?, layerscaleValue: Double?, mlpRatio: Double?, intermediateSize: Int?
    var useSwiGLU: Bool?, qkvBias: Bool?, numChannels: Int?

    static func read(_ data: Data, path: String) throws -> VisionConfig {
        guard let obj = try? JSONSerialization.jsonObject(with: data), let top = obj as? [String: Any] else {
            throw AdapterError.format("\(path) is not a JSON object")
        }
        let v = (top["vision_config"] as? [String: Any]) ?? top
        func int(_ k: String) throws -> Int? {
            guard let x = v[k], !(x is NSNull) else { return nil }
            guard let n = jsonNumber(x), n == n.rounded(), n > 0, n < Double(1 << 20) else {
                throw AdapterError.format("\(path): \(k) must be a positive whole number")
            }
            return Int(n)
        }
        func double(_ k: String) throws -> Double? {
            guard let x = v[k], !(x is NSNull) else { return nil }
            guard let n = jsonNumber(x), n.isFinite else { throw AdapterError.format("\(path): \(k) must be a number") }
            return n
        }
        var c = VisionConfig()
        c.modelType = top["model_type"] as? String
        c.hiddenSize = try int("hidden_size"); c.heads = try int("num_attention_heads"); c.layers = try int("num_hidden_layers")
        c.patchSize = try int("patch_size"); c.imageSize = try int("image_size"); c.intermediateSize = try int("intermediate_size")
        c.eps = try double("layer_norm_eps"); c.layerscaleValue = try double("layerscale_value"); c.mlpRatio = try double("mlp_ratio")
        c.hiddenAct = v["hidden_act"] as? String
        c.useSwiGLU = v["use_swiglu_ffn"] as? Bool
        c.qkvBias = v["qkv_bias"] as? Bool
        c.numChannels = try int("num_channels")
        return c
    }
}

/// A JSON number as JSONSerialization gives it, or nil for anything else. Booleans are refused by their type id:
/// on Linux an `NSNumber` holding 1.0 also passes `is Bool`.
func jsonNumber(_ v: Any?) -> Double? {
    guard let n = v as? NSNumber, CFGetTypeID(n) != CFBooleanGetTypeID() else { return nil }
    return n.doubleValue
}

extension ImagePreprocessor {
    /// `facebook/dinov2-small`'s processor (`BitImageProcessor`): shortest edge 256, bicubic, crop 224, ImageNet mean/std.
    public static let dinov2Default = ImagePreprocessor(
        resize: .shortestEdge(256), crop: (224, 224), rescaleFactor: 1.0 / 255, mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225], convention: .transformers, channels: .rgb)

    /// `SiglipImageProcessor`'s defaults: a fixed square resize, bicubic, mean and std 0.5.
    public static func siglipDefault(size: Int) -> ImagePreprocessor {
        ImagePreprocessor(resize: .fixed(height: size, width: size), crop: nil, rescaleFactor: 1.0 / 255, mean: [0.5, 0.5, 0.5],
                          std: [0.5, 0.5, 0.5], convention: .transformers, channels: .rgb)
    }
}

/// CLIP's tower behind the seam: the official `clip_encode_image` features (ln_post on every token, then proj).
public struct CLIPVisionEncoder: VisionEncoder {
    /// The bound weights.
    public var weights: CLIPVisionWeights
    /// The official torchvision transform at the tower's size, or the folder's `preprocessor_config.json`.
    public var preprocessor: ImagePreprocessor
    public var family: VisionFamily { .clip }
    public var patchSize: Int { weights.patchSize }
    public var outputDim: Int { weights.outputDim }

    /// Wraps weights with the official CLIP transform at their input size.
    public init(weights: CLIPVisionWeights) {
        self.weights = weights
        self.preprocessor = .officialCLIP(size: weights.imageSize)
    }

    /// Opens OpenAI `.pt`, a `visual.*` state dict or a Hugging Face CLIP folder (see `CLIPVisionWeights.load`).
    public static func load(path: String) throws -> CLIPVisionEncoder {
        CLIPVisionEncoder(weights: try CLIPVisionWeights.load(path: path))
    }

    public func encode(_ pixels: Tensor, pool: ThreadPool) throws -> Tensor {
        try clipEncodeImage(weights, image: pixels, pool: pool)
    }
}
