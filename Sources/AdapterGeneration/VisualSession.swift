import Foundation
import AdapterCore
import AdapterModel
import AdapterVision

/// Adapter, CLIP and image options resolved into the per-session adapter prompts.
public struct AdapterSetup {
    /// Adapter checkpoint path.
    public var adapterPath: String?
    /// CLIP weights path (OpenAI .pt, state dict, or Hugging Face folder).
    public var clipPath: String?
    /// Image path.
    public var imagePath: String?
    /// Channel order fed to CLIP (`bgr` reproduces the official cv2-based pipeline).
    public var channels: ChannelOrder = .bgr
    /// Fusion mode and early layers (paper) for the adapter.
    public var fusion: FusionMode = .release
    /// Layers that take the visual prompt in early fusion.
    public var earlyLayers: Int = 0

    /// Creates a setup.
    public init(adapterPath: String? = nil, clipPath: String? = nil, imagePath: String? = nil, channels: ChannelOrder = .bgr,
                fusion: FusionMode = .release, earlyLayers: Int = 0) {
        self.adapterPath = adapterPath
        self.clipPath = clipPath
        self.imagePath = imagePath
        self.channels = channels
        self.fusion = fusion
        self.earlyLayers = earlyLayers
    }

    /// Loads and attaches the adapter to `model`; returns the adapter prompts for this session (image
    /// included), or nil without an adapter. Without an image, an adapter with a visual branch sees an
    /// all-zero image tensor, as the official training does for text-only samples.
    public func prepare(model: LlamaModel, warn: (String) -> Void = { _ in }) throws -> AdapterPrompts? {
        guard let adapterPath else {
            if imagePath != nil || clipPath != nil { throw AdapterError.invalidArgument("--image and --clip need --adapter") }
            return nil
        }
        let adapter = try AdapterWeights.load(path: adapterPath, model: model.config)
        var cfg = adapter.config
        cfg.fusion = fusion
        cfg.earlyLayers = earlyLayers
        let configured = try adapter.withConfig(cfg)
        try model.attach(adapter: configured)
        if fusion == .early {
            // Released checkpoints never train the early layers' gates (no prompt reached them), so they are
            // exactly zero there and early fusion would silently ignore the image.
            let silent = (0..<earlyLayers).allSatisfy { l in
                guard let g = configured.layers[l].gate else { return true }
                return (0..<g.count).allSatisfy { g.floats[$0] == 0 }
            }
            if silent { warn("the gates of layers 0..<\(earlyLayers) are zero in \(adapterPath): with --fusion early the image has no effect") }
        }
        var visualQuery: Tensor?
        if configured.visual != nil {
            if let clipPath {
                let clip = try CLIPVisionWeights.load(path: clipPath)
                let image: Tensor
                if let imagePath {
                    image = try preprocessImage(path: imagePath, channels: channels, size: clip.imageSize)
                } else {
                    image = Tensor(zeros: [3, clip.imageSize, clip.imageSize])
                }
                let feats = try clipEncodeImage(clip, image: image)
                visualQuery = try model.visualQuery(clipFeatures: feats)
            } else if imagePath != nil {
                throw AdapterError.invalidArgument("--image needs --clip (OpenAI CLIP weights)")
            }
        } else if imagePath != nil {
            throw AdapterError.invalidArgument("\(adapterPath) has no visual branch, so --image cannot be used with it")
        }
        return try model.makePrompts(visualQuery: visualQuery)
    }
}
