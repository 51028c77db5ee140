// AdapterVision: image decoding, PIL-exact preprocessing and the CLIP ViT visual tower.

/// An 8-bit, 3-channel image: `pixels` holds `height` rows of `width` pixels, each pixel three bytes
/// (R, G, B) next to each other, rows top to bottom with no padding.
///
/// Decoders always fill it in R, G, B order; the BGR order the official code works in is chosen at
/// the last step (`ChannelOrder`), because every operation before it treats the channels alike.
public struct RGBImage: Equatable, Sendable {
    /// Columns.
    public var width: Int
    /// Rows.
    public var height: Int
    /// `width * height * 3` bytes, row-major, channels interleaved.
    public var pixels: [UInt8]

    /// Wraps `pixels`; traps if their count is not `width * height * 3` (a caller bug, not input).
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0 && pixels.count == width * height * 3,
                     "RGBImage: \(pixels.count) bytes for \(width)x\(height)x3")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The three channel values of the pixel in column `x`, row `y`.
    public subscript(x: Int, y: Int) -> (UInt8, UInt8, UInt8) {
        let i = (y * width + x) * 3
        return (pixels[i], pixels[i + 1], pixels[i + 2])
    }

    /// The same image with channels 0 and 2 exchanged (RGB <-> BGR).
    public func swappingRedAndBlue() -> RGBImage {
        var out = pixels
        out.withUnsafeMutableBufferPointer { p in
            var i = 0
            while i + 2 < p.count {
                p.swapAt(i, i + 2)
                i += 3
            }
        }
        return RGBImage(width: width, height: height, pixels: out)
    }

    /// The `w` x `h` window whose top-left pixel is (`x`, `y`); the window must lie inside the image.
    public func cropped(x: Int, y: Int, width w: Int, height h: Int) -> RGBImage {
        precondition(x >= 0 && y >= 0 && w >= 0 && h >= 0 && x + w <= width && y + h <= height,
                     "crop \(w)x\(h)+\(x)+\(y) outside \(width)x\(height)")
        var out = [UInt8](repeating: 0, count: w * h * 3)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for row in 0..<h {
                    let s = ((y + row) * width + x) * 3
                    let d = row * w * 3
                    for i in 0..<(w * 3) { dst[d + i] = src[s + i] }
                }
            }
        }
        return RGBImage(width: w, height: h, pixels: out)
    }

    /// Applies an EXIF orientation tag the way OpenCV's `ExifTransform` (imgcodecs/loadsave.cpp) does:
    /// 2 flip left-right, 3 flip both, 4 flip top-bottom, 5 transpose, 6 transpose then flip
    /// left-right (rotate 90 degrees clockwise), 7 transpose then flip both, 8 transpose then flip
    /// top-bottom; any other value (1, 0, 9, ...) leaves the image alone.
    public func applyingEXIFOrientation(_ orientation: Int) -> RGBImage {
        switch orientation {
        case 2: return remapped(width: width, height: height) { x, y in (width - 1 - x, y) }
        case 3: return remapped(width: width, height: height) { x, y in (width - 1 - x, height - 1 - y) }
        case 4: return remapped(width: width, height: height) { x, y in (x, height - 1 - y) }
        // The output is height x width; output (x, y) reads input (column, row) as below.
        case 5: return remapped(width: height, height: width) { x, y in (y, x) }
        case 6: return remapped(width: height, height: width) { x, y in (y, height - 1 - x) }
        case 7: return remapped(width: height, height: width) { x, y in (width - 1 - y, height - 1 - x) }
        case 8: return remapped(width: height, height: width) { x, y in (width - 1 - y, x) }
        default: return self
        }
    }

    /// Builds a `w` x `h` image whose pixel (x, y) is this image's pixel `source(x, y)`.
    private func remapped(width w: Int, height h: Int, _ source: (Int, Int) -> (Int, Int)) -> RGBImage {
        var out = [UInt8](repeating: 0, count: w * h * 3)
        let srcWidth = width
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<h {
                    for x in 0..<w {
                        let (sx, sy) = source(x, y)
                        let s = (sy * srcWidth + sx) * 3
                        let d = (y * w + x) * 3
                        dst[d] = src[s]
                        dst[d + 1] = src[s + 1]
                        dst[d + 2] = src[s + 2]
                    }
                }
            }
        }
        return RGBImage(width: w, height: h, pixels: out)
    }
}
