import Foundation

/// Pillow's resampling (`src/libImaging/Resample.c`, `ImagingResample`) for 8-bit RGB images,
/// reproduced byte for byte: the CLIP transform resizes with `PIL.Image.resize(size, BICUBIC)`, and
/// a different but "equally good" bicubic moves every pixel by a few levels, which moves the visual
/// tokens and the answers.
///
/// The rules, as Pillow 9.4 (Debian 12's python3-pil, the reference here) implements them:
/// - Kernel: Keys cubic with a = -0.5, support 2.
/// - Per output index `xx`: `scale = in / out`, `filterscale = max(scale, 1)` (this widens the kernel
///   when shrinking: antialiasing), `support = 2 * filterscale`, `center = (xx + 0.5) * scale`,
///   taps from `xmin = max(0, (int)(center - support + 0.5))` to `xmax = min(in, (int)(center + support + 0.5))`,
///   weight `K((x + xmin - center + 0.5) * (1 / filterscale))` (a multiply by the reciprocal, which
///   matters for the last bit), then divided by their sum. Taps outside the image are dropped, not
///   clamped to the edge pixel.
/// - Weights become int32 with 22 fractional bits, rounded half away from zero; each sum starts at
///   `1 << 21` and the result is `clamp(sum >> 22, 0, 255)`.
/// - Two passes: horizontal first, over only the input rows the vertical pass reads, into an 8-bit
///   intermediate (so the horizontal result is rounded before the vertical pass), then vertical.
///   A pass whose size does not change is skipped; if neither changes the image is copied.
///
/// Newer Pillow changes the pass order for tall images: PR #9524 (2026-04, in Python) resizes
/// vertically first when the image is more than 100 times taller than wide, and PR #9549 (a C rule:
/// vertical first when the height shrinks much more than the width) refines it. The order changes
/// the 8-bit rounding in between, so outputs differ by a level here and there for such images.
/// Pillow 9.4 is always horizontal-first, and so is this (the official stack pins no Pillow version;
/// 9.4 is what the reference machine has, and the change only touches extreme aspect ratios).
public enum PillowResample {
    /// Pillow's `PRECISION_BITS`: 32 - 8 (result) - 2 (headroom for negative lobes and overshoot).
    static let precisionBits: Int32 = 22

    /// Pillow's `bicubic_filter` with a = -0.5, term for term (same operation order, so the same
    /// rounding of every intermediate double).
    @inline(__always)
    static func bicubic(_ v: Double) -> Double {
        let a = -0.5
        let x = v < 0 ? -v : v
        if x < 1.0 { return ((a + 2.0) * x - (a + 3.0)) * x * x + 1 }
        if x < 2.0 { return (((x - 5) * x + 8) * x - 4) * a }
        return 0.0
    }

    /// Pillow's other separable filters (`Resample.c`), each with its support in input pixels at scale 1.
    /// `resample` ids as Pillow and transformers' `preprocessor_config.json` number them: 1 LANCZOS,
    /// 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING (0 NEAREST takes another code path in Pillow and is not offered).
    public enum Filter: Int, Sendable, CaseIterable {
        case lanczos = 1, bilinear = 2, bicubic = 3, box = 4, hamming = 5

        /// Half-width of the kernel at scale 1.
        var support: Double {
            switch self {
            case .box: return 0.5
            case .bilinear, .hamming: return 1
            case .bicubic: return 2
            case .lanczos: return 3
            }
        }

        /// The kernel, written term for term as Pillow's C so every double rounds the same way.
        @inline(__always)
        func weight(_ v: Double) -> Double {
            switch self {
            case .bicubic: return PillowResample.bicubic(v)
            case .box: return v > -0.5 && v <= 0.5 ? 1 : 0
            case .bilinear:
                let x = v < 0 ? -v : v
                return x < 1 ? 1 - x : 0
            case .hamming:
                let x = v < 0 ? -v : v
                if x == 0 { return 1 }
                if x >= 1 { return 0 }
                let px = x * Double.pi
                return sin(px) / px * (0.54 + 0.46 * cos(px))
            case .lanczos:
                func sinc(_ y: Double) -> Double {
                    if y == 0 { return 1 }
                    let py = y * Double.pi
                    return sin(py) / py
                }
                return -3 <= v && v < 3 ? sinc(v) * sinc(v / 3) : 0
            }
        }
    }

    /// Fixed-point coefficients of one pass: for output index i, `count[i]` taps starting at input
    /// index `start[i]`, with weights `weights[i * taps ..< i * taps + count[i]]`.
    struct Coefficients {
        var taps: Int
        var start: [Int]
        var count: [Int]
        var weights: [Int32]
    }

    /// `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the whole input range (box 0..in).
    static func coefficients(inSize: Int, outSize: Int, filter: Filter = .bicubic) -> Coefficients {
        // Pillow computes (in1 - in0) in float, then divides in double; for in < 2^24 that is exact.
        let scale = Double(Float(inSize) - Float(0)) / Double(outSize)
        let filterscale = scale < 1.0 ? 1.0 : scale
        let support = filter.support * filterscale
        let taps = Int(support.rounded(.up)) * 2 + 1
        let ss = 1.0 / filterscale
        var start = [Int](repeating: 0, count: outSize)
        var count = [Int](repeating: 0, count: outSize)
        var weights = [Int32](repeating: 0, count: outSize * taps)
        var k = [Double](repeating: 0, count: taps)
        let one = Double(Int32(1) << precisionBits)
        for xx in 0..<outSize {
            let center = 0.0 + (Double(xx) + 0.5) * scale
            var ww = 0.0
            // (int) casts truncate toward zero, like Swift's Int(Double).
            var xmin = Int(center - support + 0.5)
            if xmin < 0 { xmin = 0 }
            var xmax = Int(center + support + 0.5)
            if xmax > inSize { xmax = inSize }
            xmax -= xmin
            for x in 0..<xmax {
                let w = filter.weight((Double(x + xmin) - center + 0.5) * ss)
                k[x] = w
                ww += w
            }
            for x in 0..<xmax {
                if ww != 0.0 { k[x] /= ww }
                let v = k[x]
                // Round half away from zero, then truncate: `(int)(±0.5 + v * (1 << 22))`.
                weights[xx * taps + x] = v < 0 ? Int32(-0.5 + v * one) : Int32(0.5 + v * one)
            }
            start[xx] = xmin
            count[xx] = xmax
        }
        return Coefficients(taps: taps, start: start, count: count, weights: weights)
    }

    /// `clip8`: the accumulator already holds the 0.5 rounding term; shift and clamp.
    @inline(__always)
    static func clip8(_ sum: Int32) -> UInt8 {
        let v = sum >> precisionBits
        return v < 0 ? 0 : (v > 255 ? 255 : UInt8(truncatingIfNeeded: v))
    }

    /// Resizes `image` to `width` x `height` exactly as Pillow 9.4's `Image.resize((width, height),
    /// Image.BICUBIC)` does for an RGB image. Both sizes must be at least 1.
    public static func resizeBicubic(_ image: RGBImage, width: Int, height: Int) -> RGBImage {
        resize(image, width: width, height: height, filter: .bicubic)
    }

    /// Resizes `image` to `width` x `height` as Pillow 9.4's `Image.resize((width, height), filter)` does
    /// for an RGB image (the path transformers' PIL-based image processors take).
    public static func resize(_ image: RGBImage, width: Int, height: Int, filter: Filter) -> RGBImage {
        precondition(width > 0 && height > 0, "resize to \(width)x\(height)")
        let needHorizontal = width != image.width
        let needVertical = height != image.height
        if !needHorizontal && !needVertical { return image }

        var vertical = coefficients(inSize: image.height, outSize: height, filter: filter)
        let firstRow = vertical.start[0]
        let lastRow = vertical.start[height - 1] + vertical.count[height - 1]

        var current = image
        if needHorizontal {
            let horizontal = coefficients(inSize: image.width, outSize: width, filter: filter)
            for i in 0..<height { vertical.start[i] -= firstRow }
            current = horizontalPass(image, coefficients: horizontal, outWidth: width,
                                     firstRow: firstRow, rowCount: lastRow - firstRow)
        }
        if needVertical {
            current = verticalPass(current, coefficients: vertical, outHeight: height)
        }
        return current
    }

    /// Rows `firstRow ..< firstRow + rowCount` of `image`, each resampled to `outWidth` columns.
    static func horizontalPass(_ image: RGBImage, coefficients c: Coefficients, outWidth: Int,
                               firstRow: Int, rowCount: Int) -> RGBImage {
        var out = [UInt8](repeating: 0, count: outWidth * rowCount * 3)
        let inWidth = image.width
        let half = Int32(1) << (precisionBits - 1)
        image.pixels.withUnsafeBufferPointer { srcBuffer in
            out.withUnsafeMutableBufferPointer { dstBuffer in
                c.weights.withUnsafeBufferPointer { kk in
                    let src = srcBuffer.baseAddress!, dst = dstBuffer.baseAddress!, k0 = kk.baseAddress!
                    for yy in 0..<rowCount {
                        let row = src + (yy + firstRow) * inWidth * 3
                        let outRow = dst + yy * outWidth * 3
                        for xx in 0..<outWidth {
                            let xmin = c.start[xx], n = c.count[xx]
                            let k = k0 + xx * c.taps
                            var s0 = half, s1 = half, s2 = half
                            var p = row + xmin * 3
                            for x in 0..<n {
                                let w = k[x]
                                s0 = s0 &+ Int32(p[0]) &* w
                                s1 = s1 &+ Int32(p[1]) &* w
                                s2 = s2 &+ Int32(p[2]) &* w
                                p += 3
                            }
                            outRow[xx * 3] = clip8(s0)
                            outRow[xx * 3 + 1] = clip8(s1)
                            outRow[xx * 3 + 2] = clip8(s2)
                        }
                    }
                }
            }
        }
        return RGBImage(width: outWidth, height: rowCount, pixels: out)
    }

    /// Every column of `image` resampled to `outHeight` rows; `coefficients.start` is relative to
    /// the first row of `image`.
    static func verticalPass(_ image: RGBImage, coefficients c: Coefficients, outHeight: Int) -> RGBImage {
        let width = image.width
        let rowBytes = width * 3
        var out = [UInt8](repeating: 0, count: rowBytes * outHeight)
        let half = Int32(1) << (precisionBits - 1)
        var acc = [Int32](repeating: 0, count: rowBytes)
        image.pixels.withUnsafeBufferPointer { srcBuffer in
            out.withUnsafeMutableBufferPointer { dstBuffer in
                acc.withUnsafeMutableBufferPointer { accBuffer in
                    c.weights.withUnsafeBufferPointer { kk in
                        let src = srcBuffer.baseAddress!, dst = dstBuffer.baseAddress!
                        let sums = accBuffer.baseAddress!, k0 = kk.baseAddress!
                        for yy in 0..<outHeight {
                            let ymin = c.start[yy], n = c.count[yy]
                            let k = k0 + yy * c.taps
                            // Row-at-a-time accumulation: the same integer sums as Pillow's
                            // per-pixel loop (integer addition is exact and the order is the
                            // same), with unit-stride memory access.
                            for i in 0..<rowBytes { sums[i] = half }
                            for y in 0..<n {
                                let w = k[y]
                                let row = src + (y + ymin) * rowBytes
                                for i in 0..<rowBytes { sums[i] = sums[i] &+ Int32(row[i]) &* w }
                            }
                            let outRow = dst + yy * rowBytes
                            for i in 0..<rowBytes { outRow[i] = clip8(sums[i]) }
                        }
                    }
                }
            }
        }
        return RGBImage(width: width, height: outHeight, pixels: out)
    }
}
