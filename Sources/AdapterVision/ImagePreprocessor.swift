// The image transform of any vision encoder: the official CLIP transform (torchvision on a PIL image) and the
// Hugging Face image processors (`CLIPImageProcessor`, `BitImageProcessor` for DINOv2, `SiglipImageProcessor`)
// in their PIL-based ("slow") form, described by a folder's `preprocessor_config.json`.
import Foundation
import AdapterCore

/// Resize, centre crop, rescale and normalise, Pillow-exact, with the rounding conventions of the library
/// that defined the transform (torchvision for the official CLIP, transformers for Hugging Face folders).
public struct ImagePreprocessor: Sendable, Equatable {
    /// How the decoded image is resized first.
    public enum Resize: Sendable, Equatable {
        /// Short side to `n`, long side `int(n * long / short)` (torchvision's `Resize(n)`, transformers'
        /// `{"shortest_edge": n}`: both truncate).
        case shortestEdge(Int)
        /// Exactly `width` x `height`, aspect ratio not kept (transformers' `{"height", "width"}`, SigLIP).
        case fixed(height: Int, width: Int)
        /// No resize.
        case none
    }

    /// Whose arithmetic the transform reproduces; they differ in the crop offset and the rescale.
    public enum Convention: String, Sendable, Equatable {
        /// torchvision: crop offset `int(round((full - crop) / 2.0))` (half to even), `x / 255` in float32.
        case torchvision
        /// transformers: crop offset `(full - crop) // 2` (floor; a smaller image is zero-padded), rescale as
        /// `float32(float64(x) * factor)`.
        case transformers
    }

    /// The resize step.
    public var resize: Resize
    /// Pillow filter of the resize.
    public var filter: PillowResample.Filter
    /// Centre crop (height, width), or nil for none.
    public var crop: (height: Int, width: Int)?
    /// Multiplier turning 0...255 into the network's range (nil: no rescale). The torchvision convention
    /// divides by 255 instead, which is what `ToTensor` does.
    public var rescaleFactor: Double?
    /// Per-channel mean and standard deviation, in tensor channel order as published (nil: no normalisation).
    public var mean: [Float]?, std: [Float]?
    /// Rounding conventions.
    public var convention: Convention
    /// Channel order of the output tensor.
    public var channels: ChannelOrder

    /// A transform from its parts.
    public init(resize: Resize, filter: PillowResample.Filter = .bicubic, crop: (height: Int, width: Int)?, rescaleFactor: Double?,
                mean: [Float]?, std: [Float]?, convention: Convention, channels: ChannelOrder) {
        self.resize = resize; self.filter = filter; self.crop = crop; self.rescaleFactor = rescaleFactor
        self.mean = mean; self.std = std; self.convention = convention; self.channels = channels
    }

    /// The official CLIP transform (`CLIPPreprocessor`): Resize(size, bicubic), CenterCrop(size), ToTensor,
    /// Normalize with CLIP's constants, torchvision's rounding.
    public static func officialCLIP(size: Int = 224, channels: ChannelOrder = .bgr) -> ImagePreprocessor {
        ImagePreprocessor(resize: .shortestEdge(size), crop: (size, size), rescaleFactor: 1.0 / 255, mean: CLIPPreprocessor.mean,
                          std: CLIPPreprocessor.std, convention: .torchvision, channels: channels)
    }

    public static func == (a: ImagePreprocessor, b: ImagePreprocessor) -> Bool {
        a.resize == b.resize && a.filter == b.filter && a.crop?.height == b.crop?.height && a.crop?.width == b.crop?.width
            && a.rescaleFactor == b.rescaleFactor && a.mean == b.mean && a.std == b.std && a.convention == b.convention
            && a.channels == b.channels
    }

    /// The same transform with another channel order.
    public func with(channels: ChannelOrder) -> ImagePreprocessor {
        var c = self
        c.channels = channels
        return c
    }

    /// (height, width) of the tensors this transform produces from a `width` x `height` image.
    public func outputSize(width: Int, height: Int) -> (height: Int, width: Int) {
        if let crop { return crop }
        let (w, h) = resizedSize(width: width, height: height)
        return (h, w)
    }

    /// (height, width) of every output when it does not depend on the input (a crop or a fixed resize), else nil.
    public var fixedOutputSize: (height: Int, width: Int)? {
        if let crop { return crop }
        if case let .fixed(h, w) = resize { return (h, w) }
        return nil
    }

    /// Size after the resize step, as (width, height).
    public func resizedSize(width: Int, height: Int) -> (width: Int, height: Int) {
        switch resize {
        case .shortestEdge(let n): return CLIPPreprocessor.resizedSize(width: width, height: height, size: n)
        case .fixed(let h, let w): return (w, h)
        case .none: return (width, height)
        }
    }

    /// Refuses images the transform cannot take or would blow up (the whole image is resized before the crop).
    public func checkResizable(_ image: RGBImage) throws {
        guard image.width > 0, image.height > 0 else { throw AdapterError.invalidArgument("image has no pixels") }
        let (w, h) = resizedSize(width: image.width, height: image.height)
        guard w.multipliedReportingOverflow(by: h).partialValue <= 1 << 25, w <= 1 << 20, h <= 1 << 20 else {
            throw AdapterError.invalidArgument("image of \(image.width)x\(image.height) pixels has too extreme an aspect ratio for the image transform (it would be resized to \(w)x\(h))")
        }
        if let crop, convention == .torchvision, crop.width > w || crop.height > h {
            throw AdapterError.invalidArgument("image of \(image.width)x\(image.height) pixels is resized to \(w)x\(h), smaller than the \(crop.width)x\(crop.height) crop")
        }
    }

    /// Centre-crop offset of `crop` within `full` in this convention.
    public func cropOffset(full: Int, crop: Int) -> Int {
        switch convention {
        case .torchvision: return CLIPPreprocessor.centerCropOffset(full: full, crop: crop)
        case .transformers: return (full - crop) >= 0 ? (full - crop) / 2 : -((crop - full + 1) / 2)
        }
    }

    /// Resize and centre crop: the 8-bit image the rescale receives; it determines the tensor exactly.
    public func resizedAndCropped(_ image: RGBImage) -> RGBImage {
        let (w, h) = resizedSize(width: image.width, height: image.height)
        let resized = (w, h) == (image.width, image.height) ? image : PillowResample.resize(image, width: w, height: h, filter: filter)
        guard let crop else { return resized }
        let left = cropOffset(full: w, crop: crop.width), top = cropOffset(full: h, crop: crop.height)
        if left >= 0, top >= 0, left + crop.width <= w, top + crop.height <= h {
            return resized.cropped(x: left, y: top, width: crop.width, height: crop.height)
        }
        // transformers' center_crop zero-pads an image smaller than the crop (before the rescale, so the padding
        // normalises to -mean/std); its pad-then-slice arithmetic reduces to reading (y + top, x + left).
        var out = [UInt8](repeating: 0, count: crop.width * crop.height * 3)
        resized.pixels.withUnsafeBufferPointer { src in
            for y in 0..<crop.height where (0..<h).contains(y + top) {
                for x in 0..<crop.width where (0..<w).contains(x + left) {
                    let s = ((y + top) * w + x + left) * 3, d = (y * crop.width + x) * 3
                    out[d] = src[s]; out[d + 1] = src[s + 1]; out[d + 2] = src[s + 2]
                }
            }
        }
        return RGBImage(width: crop.width, height: crop.height, pixels: out)
    }

    /// Rescale + normalise of an already cropped image: a (3, h, w) f32 tensor whose channel 0 is blue for
    /// `.bgr` and red for `.rgb`.
    public func normalize(_ crop: RGBImage) -> Tensor {
        let plane = crop.width * crop.height
        let tensor = Tensor(zeros: [3, crop.height, crop.width], dtype: .f32)
        let out = tensor.floats
        crop.pixels.withUnsafeBufferPointer { px in
            for c in 0..<3 {
                let source = channels == .rgb ? c : 2 - c
                let m = mean?[c] ?? 0, s = std?[c] ?? 1, normalise = mean != nil
                let dst = out + c * plane
                for i in 0..<plane {
                    var x = Float(px[i * 3 + source])
                    if let f = rescaleFactor {
                        // torchvision's ToTensor divides in float32; transformers multiplies in float64, then
                        // narrows: the two differ in the last bit for some levels.
                        x = convention == .torchvision ? x / 255 : Float(Double(px[i * 3 + source]) * f)
                    }
                    dst[i] = normalise ? (x - m) / s : x
                }
            }
        }
        return tensor
    }

    /// The full transform of a decoded image.
    public func callAsFunction(_ image: RGBImage) throws -> Tensor {
        try checkResizable(image)
        return normalize(resizedAndCropped(image))
    }

    // MARK: - preprocessor_config.json

    /// Reads a Hugging Face `preprocessor_config.json` (`CLIPImageProcessor`, `BitImageProcessor`,
    /// `SiglipImageProcessor` and their kin): `do_resize`/`size`/`resample`, `do_center_crop`/`crop_size`,
    /// `do_rescale`/`rescale_factor`, `do_normalize`/`image_mean`/`image_std`. `squareByDefault` says how a bare
    /// integer `size` reads (SigLIP: a square; CLIP and DINOv2: the shortest edge), as each processor's
    /// `get_size_dict` call does.
    public static func huggingFace(configPath path: String, squareByDefault: Bool, channels: ChannelOrder) throws -> ImagePreprocessor {
        guard let data = FileManager.default.contents(atPath: path) else { throw AdapterError.io("cannot read \(path)") }
        guard let obj = try? JSONSerialization.jsonObject(with: data), let c = obj as? [String: Any] else {
            throw AdapterError.format("\(path) is not a JSON object")
        }
        func bool(_ k: String, _ d: Bool) throws -> Bool {
            guard let v = c[k], !(v is NSNull) else { return d }
            guard let b = v as? Bool else { throw AdapterError.format("\(path): \(k) must be true or false") }
            return b
        }
        func int(_ v: Any?, _ what: String) throws -> Int {
            guard let n = jsonNumber(v), n == n.rounded(), n >= 1, n <= 8192 else {
                throw AdapterError.format("\(path): \(what) must be a whole number between 1 and 8192")
            }
            return Int(n)
        }
        func size(_ v: Any?, _ what: String, square: Bool) throws -> Resize {
            if let d = v as? [String: Any] {
                if let s = d["shortest_edge"] {
                    guard d["longest_edge"] == nil else { throw AdapterError.unsupported("\(path): \(what) with longest_edge is not supported") }
                    return .shortestEdge(try int(s, "\(what).shortest_edge"))
                }
                if d["height"] != nil || d["width"] != nil {
                    return .fixed(height: try int(d["height"], "\(what).height"), width: try int(d["width"], "\(what).width"))
                }
                throw AdapterError.unsupported("\(path): \(what) \(d.keys.sorted()) is not supported (expected shortest_edge or height and width)")
            }
            let n = try int(v, what)
            return square ? .fixed(height: n, width: n) : .shortestEdge(n)
        }
        func floats(_ k: String) throws -> [Float]? {
            guard let v = c[k], !(v is NSNull) else { return nil }
            if let n = jsonNumber(v) { return [Float](repeating: Float(n), count: 3) }
            guard let a = v as? [Any], a.count == 3 else { throw AdapterError.format("\(path): \(k) must be three numbers") }
            let d = a.compactMap(jsonNumber)
            guard d.count == 3 else { throw AdapterError.format("\(path): \(k) must be three numbers") }
            return d.map { Float($0) }
        }
        var resize = Resize.none
        var filter = PillowResample.Filter.bicubic
        if try bool("do_resize", true) {
            guard let s = c["size"] else { throw AdapterError.format("\(path): do_resize without size") }
            resize = try size(s, "size", square: squareByDefault)
            if let r = c["resample"], !(r is NSNull) {
                guard let n = jsonNumber(r), n == n.rounded(), abs(n) < 1e6 else { throw AdapterError.format("\(path): resample must be a whole number") }
                guard let f = PillowResample.Filter(rawValue: Int(n)) else {
                    throw AdapterError.unsupported("\(path): resample \(n) is not supported (1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)")
                }
                filter = f
            }
        }
        var crop: (height: Int, width: Int)?
        if try bool("do_center_crop", false) {
            guard let s = c["crop_size"] else { throw AdapterError.format("\(path): do_center_crop without crop_size") }
            guard case let .fixed(h, w) = try size(s, "crop_size", square: true) else {
                throw AdapterError.format("\(path): crop_size must give height and width")
            }
            crop = (h, w)
        }
        var rescale: Double?
        if try bool("do_rescale", true) {
            if let v = c["rescale_factor"], !(v is NSNull) {
                guard let n = jsonNumber(v), n > 0, n.isFinite else { throw AdapterError.format("\(path): rescale_factor must be a positive number") }
                rescale = n
            } else {
                rescale = 1.0 / 255
            }
        }
        var mean: [Float]?, std: [Float]?
        if try bool("do_normalize", true) {
            guard let m = try floats("image_mean"), let s = try floats("image_std") else {
                throw AdapterError.format("\(path): do_normalize without image_mean and image_std")
            }
            guard s.allSatisfy({ $0 != 0 && $0.isFinite }), m.allSatisfy(\.isFinite) else { throw AdapterError.format("\(path): image_std has a zero") }
            mean = m; std = s
        }
        return ImagePreprocessor(resize: resize, filter: filter, crop: crop, rescaleFactor: rescale, mean: mean, std: std,
                                 convention: .transformers, channels: channels)
    }
}
