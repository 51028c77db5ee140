import AdapterCore

/// Which decoded channel becomes channel 0 of the image tensor.
public enum ChannelOrder: String, CaseIterable, Sendable {
    /// Blue, green, red: what the official code feeds CLIP. It reads images with `cv2.imread`
    /// (B, G, R order) and hands the array to `Image.fromarray`, which labels it RGB, so the CLIP
    /// normalisation's "red" mean and std are applied to blue. The released weights were trained
    /// that way, so this is the default for reproducing the official answers.
    case bgr
    /// Red, green, blue: what CLIP itself was trained on.
    case rgb
}

/// The CLIP image transform of the official code (openai/CLIP `clip/clip.py` `_transform`, built by
/// `clip.load`): torchvision `Resize(size, BICUBIC)`, `CenterCrop(size)`, `convert("RGB")` (a no-op
/// here), `ToTensor`, `Normalize(mean, std)`, on the PIL image made from cv2's array.
///
/// Exact facts reproduced (torchvision 0.14, Pillow 9.4):
/// - Resize with one number scales the short side to `size` and the long side to
///   `int(size * long / short)` (truncation; `_compute_resized_output_size`), also when that means
///   enlarging a small image. For PIL input torchvision calls `img.resize((w, h), BICUBIC)`; its
///   `antialias` argument is ignored, and Pillow's bicubic antialiases on its own when shrinking.
/// - CenterCrop takes `top = int(round((h - size) / 2.0))`, `left` likewise, with Python's
///   round-half-to-even (an odd excess of 1 gives offset 0, of 3 gives 2).
/// - ToTensor divides by 255 in float32; Normalize then computes `(x - mean) / std` in float32 with
///   the constants rounded to float32, so the result here is bit-identical given the same crop.
public struct CLIPPreprocessor: Sendable {
    /// CLIP's per-channel mean (R, G, B order as published; index i is applied to tensor channel i).
    /// Written as Double then narrowed, as `torch.as_tensor(list_of_python_floats, dtype=float32)`
    /// does, rather than as Float literals.
    public static let mean: [Float] = [0.48145466, 0.4578275, 0.40821073].map { (v: Double) in Float(v) }
    /// CLIP's per-channel standard deviation (same convention as `mean`).
    public static let std: [Float] = [0.26862954, 0.26130258, 0.27577711].map { (v: Double) in Float(v) }

    /// Output side in pixels: 224 for ViT-L/14 (the official model), 336 for the @336px CLIPs.
    public var size: Int
    /// Channel order of the output tensor.
    public var channels: ChannelOrder

    /// A transform producing `channels`-ordered `size` x `size` tensors.
    public init(size: Int = 224, channels: ChannelOrder = .bgr) {
        self.size = size
        self.channels = channels
    }

    /// torchvision's `_compute_resized_output_size` for `Resize(size)`: the short side becomes `size`,
    /// the long side `int(size * long / short)`. Returns (width, height).
    public static func resizedSize(width: Int, height: Int, size: Int) -> (width: Int, height: Int) {
        let (short, long) = width <= height ? (width, height) : (height, width)
        // Python computes size * long exactly as an int, then true-divides: both operands are
        // exactly representable doubles here, so one correctly rounded division matches it.
        let newLong = Int((Double(size * long) / Double(short)).rounded(.towardZero))
        return width <= height ? (size, newLong) : (newLong, size)
    }

    /// Refuses images the transform would blow up: the whole image is resized before the centre crop (as
    /// torchvision does), so a 1×65000 strip would become a 224×14.5M intermediate (10 GB).
    public func checkResizable(_ image: RGBImage) throws {
        guard image.width > 0, image.height > 0 else { throw AdapterError.invalidArgument("image has no pixels") }
        let (w, h) = Self.resizedSize(width: image.width, height: image.height, size: size)
        guard w.multipliedReportingOverflow(by: h).partialValue <= 1 << 25, w <= 1 << 20, h <= 1 << 20 else {
            throw AdapterError.invalidArgument("image of \(image.width)x\(image.height) pixels has too extreme an aspect ratio for the CLIP transform (it would be resized to \(w)x\(h))")
        }
    }

    /// torchvision's CenterCrop offset: `int(round((full - crop) / 2.0))`, half to even.
    public static func centerCropOffset(full: Int, crop: Int) -> Int {
        Int((Double(full - crop) / 2.0).rounded(.toNearestOrEven))
    }

    /// The same transform as an `ImagePreprocessor` (which carries out both steps below).
    public var general: ImagePreprocessor { .officialCLIP(size: size, channels: channels) }

    /// Resize and center-crop: the `size` x `size` 8-bit image that ToTensor receives, channels in
    /// the input's order. It determines the tensor exactly. (The short side is exactly `size` and the long side
    /// at least `size`, so torchvision never pads here.)
    public func resizedAndCropped(_ image: RGBImage) -> RGBImage { general.resizedAndCropped(image) }

    /// ToTensor + Normalize of an already cropped RGB image: a (3, h, w) f32 tensor whose channel 0
    /// is blue for `.bgr` and red for `.rgb` (x / 255, then (x - mean) / std, both in float32 as torch does).
    public func normalize(_ crop: RGBImage) -> Tensor { general.normalize(crop) }

    /// The full transform of a decoded image: a (3, size, size) f32 tensor.
    public func callAsFunction(_ image: RGBImage) -> Tensor {
        normalize(resizedAndCropped(image))
    }
}

/// Decodes the image at `path` as cv2 would and applies the official CLIP transform; returns the
/// (3, size, size) float32 tensor (what `preprocess --image PATH --channels ... --out FILE.npy` writes).
public func preprocessImage(path: String, channels: ChannelOrder, size: Int = 224) throws -> Tensor {
    guard size > 0 && size <= 4096 else {
        throw AdapterError.invalidArgument("image size must be between 1 and 4096, got \(size)")
    }
    return try preprocessImage(try ImageDecoder.decode(path: path), channels: channels, size: size)
}

/// The official CLIP transform of an already decoded image (see `preprocessImage(path:)`).
public func preprocessImage(_ image: RGBImage, channels: ChannelOrder, size: Int = 224) throws -> Tensor {
    guard size > 0 && size <= 4096 else {
        throw AdapterError.invalidArgument("image size must be between 1 and 4096, got \(size)")
    }
    let pre = CLIPPreprocessor(size: size, channels: channels)
    try pre.checkResizable(image)
    return pre(image)
}
