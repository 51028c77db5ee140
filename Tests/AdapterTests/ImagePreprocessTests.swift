import LlamaAdapter
@testable import AdapterVision
import Foundation
import XCTest

/// The image path against the official pipeline: cv2.imread -> Image.fromarray -> CLIP transform.
/// Golden values come from tools/reference/make_image_fixtures.py (cv2 4.6, Pillow 9.4, torchvision 0.14).
final class ImagePreprocessTests: XCTestCase {
    // MARK: Fixtures

    static let imageDir = Fixtures.root.appendingPathComponent("images")

    static func path(_ name: String) -> String { imageDir.appendingPathComponent(name).path }

    struct Expected: Decodable {
        struct Decode: Decodable {
            let file: String
            let width: Int
            let height: Int
            let crc32_bgr: UInt32
            let channel_sums_bgr: [Int]
            let samples_yx_bgr: [[Int]]
        }
        struct Resize: Decodable {
            let source: String
            let width: Int
            let height: Int
            let crc32: UInt32
            let samples_yx: [[Int]]
        }
        struct Preprocess: Decodable {
            let file: String
            let channels: String
            let size: Int
            let resized_width: Int
            let resized_height: Int
            let crop_left: Int
            let crop_top: Int
            let crc32_crop: UInt32
            let crc32_tensor: UInt32
            let mean: Double
            let mean_abs: Double
            let samples: [[Double]]
            let npy: String?
        }
        struct Orientation: Decodable {
            let label: String
            let app1_hex: [String]
            let width: Int
            let height: Int
            let crc32_bgr: UInt32
        }
        let decode: [Decode]
        let resize: [Resize]
        let preprocess: [Preprocess]
        let orientation: [Orientation]
    }

    static let expected: Expected = {
        let data = try! Data(contentsOf: imageDir.appendingPathComponent("expected.json"))
        return try! JSONDecoder().decode(Expected.self, from: data)
    }()

    /// CRC-32 (zlib polynomial), as Python's zlib.crc32 computes it.
    static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32<C: Collection>(_ bytes: C, start: UInt32 = 0) -> UInt32 where C.Element == UInt8 {
        var c = ~start
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return ~c
    }

    static func crc32(_ tensor: Tensor) -> UInt32 {
        crc32(UnsafeRawBufferPointer(start: tensor.data, count: tensor.byteCount))
    }

    static func bytes(_ name: String) -> [UInt8] { [UInt8](FileManager.default.contents(atPath: path(name))!) }

    static func decode(bytes: [UInt8], name: String = "mutated", limit: Int = ImageDecoder.maximumPixelCount) throws -> RGBImage {
        try bytes.withUnsafeBytes { try ImageDecoder.decode(bytes: $0, name: name, maximumPixelCount: limit) }
    }

    // MARK: Decoding

    /// Every fixture decodes to cv2.imread's exact bytes (after RGB -> BGR). Same libjpeg-turbo and
    /// libpng as cv2 with the same settings, so JPEG is exact too; if a different libjpeg build
    /// were used (e.g. Homebrew's), the JPEG check falls back to +-2 on the sampled pixels.
    func testDecodedPixelsMatchOpenCV() throws {
        for c in Self.expected.decode {
            let image = try ImageDecoder.decode(path: Self.path(c.file))
            XCTAssertEqual(image.width, c.width, c.file)
            XCTAssertEqual(image.height, c.height, c.file)
            guard image.width == c.width, image.height == c.height else { continue }
            let bgr = image.swappingRedAndBlue()
            let crc = Self.crc32(bgr.pixels)
            var maxDiff = 0
            for s in c.samples_yx_bgr {
                let (b, g, r) = bgr[s[1], s[0]]
                maxDiff = max(maxDiff, abs(Int(b) - s[2]), abs(Int(g) - s[3]), abs(Int(r) - s[4]))
            }
            var sums = [0, 0, 0]
            for i in 0..<(bgr.width * bgr.height) { for ch in 0..<3 { sums[ch] += Int(bgr.pixels[i * 3 + ch]) } }
            let meanDiff = zip(sums, c.channel_sums_bgr).map { abs(Double($0 - $1)) / Double(c.width * c.height) }.max()!
            print("decode \(c.file): \(c.width)x\(c.height) exact=\(crc == c.crc32_bgr) sampled max |diff|=\(maxDiff) channel mean |diff|=\(meanDiff)")
            if c.file.hasSuffix(".png") {
                XCTAssertEqual(crc, c.crc32_bgr, "\(c.file): PNG decoding must be bit-exact with cv2")
            } else if crc != c.crc32_bgr {
                XCTAssertLessThanOrEqual(maxDiff, 2, c.file)
                XCTAssertLessThan(meanDiff, 0.5, c.file)
            }
        }
    }

    func testPaletteDecodeEqualsStoredArray() throws {
        let stored = try NPY.read(path: Self.path("palette_decoded.npy"))
        XCTAssertEqual(stored.descr, "|u1")
        let image = try ImageDecoder.decode(path: Self.path("palette.png"))
        XCTAssertEqual(stored.shape, [image.height, image.width, 3])
        XCTAssertEqual(try stored.bytes(), image.swappingRedAndBlue().pixels)
    }

    /// cv2's EXIF orientation handling on JPEG, quirks included (first APP1 only, no identifier
    /// check, value read as 16 bits, first entry wins, a failed read stops the IFD walk).
    func testEXIFOrientationMatchesOpenCV() throws {
        let base = Self.bytes("progressive.jpg")
        for c in Self.expected.orientation {
            var file = Array(base[0..<2])
            for hex in c.app1_hex {
                let payload = stride(from: 0, to: hex.count, by: 2).map { i -> UInt8 in
                    let s = hex.index(hex.startIndex, offsetBy: i)
                    return UInt8(hex[s..<hex.index(s, offsetBy: 2)], radix: 16)!
                }
                let length = payload.count + 2
                file += [0xFF, 0xE1, UInt8(length >> 8), UInt8(length & 0xFF)] + payload
            }
            file += base[2...]
            let image = try Self.decode(bytes: file, name: c.label)
            XCTAssertEqual(image.width, c.width, c.label)
            XCTAssertEqual(image.height, c.height, c.label)
            XCTAssertEqual(Self.crc32(image.swappingRedAndBlue().pixels), c.crc32_bgr, c.label)
        }
    }

    func testOrientationTransformsOnTinyImage() {
        // 3 wide, 2 high; pixel value = 10 * row + column in every channel.
        let px: [UInt8] = [0, 1, 2, 10, 11, 12].flatMap { [$0, $0, $0] }
        let image = RGBImage(width: 3, height: 2, pixels: px)
        func rows(_ im: RGBImage) -> [[UInt8]] {
            (0..<im.height).map { y in (0..<im.width).map { x in im[x, y].0 } }
        }
        XCTAssertEqual(rows(image.applyingEXIFOrientation(1)), [[0, 1, 2], [10, 11, 12]])
        XCTAssertEqual(rows(image.applyingEXIFOrientation(2)), [[2, 1, 0], [12, 11, 10]])
        XCTAssertEqual(rows(image.applyingEXIFOrientation(3)), [[12, 11, 10], [2, 1, 0]])
        XCTAssertEqual(rows(image.applyingEXIFOrientation(4)), [[10, 11, 12], [0, 1, 2]])
        XCTAssertEqual(rows(image.applyingEXIFOrientation(5)), [[0, 10], [1, 11], [2, 12]])
        XCTAssertEqual(rows(image.applyingEXIFOrientation(6)), [[10, 0], [11, 1], [12, 2]])  // 90 degrees clockwise
        XCTAssertEqual(rows(image.applyingEXIFOrientation(7)), [[12, 2], [11, 1], [10, 0]])
        XCTAssertEqual(rows(image.applyingEXIFOrientation(8)), [[2, 12], [1, 11], [0, 10]])  // 90 degrees counter-clockwise
        XCTAssertEqual(image.applyingEXIFOrientation(0), image)
        XCTAssertEqual(image.applyingEXIFOrientation(9), image)
    }

    // MARK: Resampling

    /// Pillow 9.4 `Image.resize(size, BICUBIC)`, byte for byte, shrinking, enlarging, one axis only,
    /// odd sizes and extreme aspect ratios.
    func testBicubicMatchesPillowExactly() throws {
        var sources: [String: RGBImage] = [:]
        for c in Self.expected.resize {
            if sources[c.source] == nil {
                // Pillow resized cv2's BGR array; channels are independent, so resize the same bytes.
                sources[c.source] = try ImageDecoder.decode(path: Self.path(c.source)).swappingRedAndBlue()
            }
            let out = PillowResample.resizeBicubic(sources[c.source]!, width: c.width, height: c.height)
            XCTAssertEqual(out.width, c.width)
            XCTAssertEqual(out.height, c.height)
            var maxDiff = 0
            for s in c.samples_yx {
                let (a, b, d) = out[s[1], s[0]]
                maxDiff = max(maxDiff, abs(Int(a) - s[2]), abs(Int(b) - s[3]), abs(Int(d) - s[4]))
            }
            XCTAssertEqual(Self.crc32(out.pixels), c.crc32, "\(c.source) -> \(c.width)x\(c.height): sampled max |diff| \(maxDiff)")
        }
        let small = try NPY.read(path: Self.path("resize_small.npy"))
        let src = try ImageDecoder.decode(path: Self.path("resize_src.png")).swappingRedAndBlue()
        let out = PillowResample.resizeBicubic(src, width: small.shape[1], height: small.shape[0])
        XCTAssertEqual(out.pixels, try small.bytes())
    }

    func testSameSizeResizeIsIdentity() throws {
        let image = try ImageDecoder.decode(path: Self.path("tiny.png"))
        XCTAssertEqual(PillowResample.resizeBicubic(image, width: 16, height: 16), image)
    }

    func testTorchvisionSizeRules() {
        XCTAssertTrue(CLIPPreprocessor.resizedSize(width: 320, height: 240, size: 224) == (298, 224))  // 298.67 truncated
        XCTAssertTrue(CLIPPreprocessor.resizedSize(width: 200, height: 300, size: 224) == (224, 336))
        XCTAssertTrue(CLIPPreprocessor.resizedSize(width: 16, height: 16, size: 224) == (224, 224))
        XCTAssertTrue(CLIPPreprocessor.resizedSize(width: 121, height: 120, size: 224) == (225, 224))
        XCTAssertEqual(CLIPPreprocessor.centerCropOffset(full: 225, crop: 224), 0)  // round(0.5) = 0
        XCTAssertEqual(CLIPPreprocessor.centerCropOffset(full: 227, crop: 224), 2)  // round(1.5) = 2
        XCTAssertEqual(CLIPPreprocessor.centerCropOffset(full: 229, crop: 224), 2)  // round(2.5) = 2
        XCTAssertEqual(CLIPPreprocessor.centerCropOffset(full: 298, crop: 224), 37)
    }

    // MARK: CLIP transform

    /// The whole official chain. Measured on Debian 12 (libjpeg-turbo 2.1.5, libpng 1.6.39): every
    /// crop and every tensor is bit-identical (mean |error| 0) for PNG and JPEG alike.
    func testPreprocessMatchesOfficialPipeline() throws {
        for c in Self.expected.preprocess {
            let order = ChannelOrder(rawValue: c.channels)!
            let label = "\(c.file) \(c.channels) \(c.size)"
            let image = try ImageDecoder.decode(path: Self.path(c.file))
            let transform = CLIPPreprocessor(size: c.size, channels: order)
            let (w, h) = CLIPPreprocessor.resizedSize(width: image.width, height: image.height, size: c.size)
            XCTAssertEqual(w, c.resized_width, label)
            XCTAssertEqual(h, c.resized_height, label)
            XCTAssertEqual(CLIPPreprocessor.centerCropOffset(full: w, crop: c.size), c.crop_left, label)
            XCTAssertEqual(CLIPPreprocessor.centerCropOffset(full: h, crop: c.size), c.crop_top, label)

            let crop = transform.resizedAndCropped(image)
            // The Python crop is in the PIL image's order: BGR for "bgr", RGB for "rgb".
            let cropInPythonOrder = order == .bgr ? crop.swappingRedAndBlue() : crop
            let cropExact = Self.crc32(cropInPythonOrder.pixels) == c.crc32_crop

            let tensor = transform(image)
            XCTAssertEqual(tensor.shape, [3, c.size, c.size], label)
            let values = UnsafeBufferPointer(start: tensor.floats, count: tensor.count)
            var sampleMax: Float = 0
            for s in c.samples { sampleMax = max(sampleMax, abs(values[Int(s[0])] - Float(s[1]))) }
            var sum = 0.0, sumAbs = 0.0
            for v in values { sum += Double(v); sumAbs += Double(abs(v)) }
            let n = Double(values.count)
            var fullMeanAbsError = Double.nan, fullMaxError = Double.nan
            if let npy = c.npy {
                let reference = try NPY.read(path: Self.path(npy))
                XCTAssertEqual(reference.shape, [3, c.size, c.size])
                let ref = try reference.floats()
                var e = 0.0, m = 0.0
                for i in 0..<ref.count {
                    let d = Double(abs(values[i] - ref[i]))
                    e += d
                    m = max(m, d)
                }
                fullMeanAbsError = e / Double(ref.count)
                fullMaxError = m
                XCTAssertLessThan(fullMeanAbsError, 0.005, label)
            }
            let tensorExact = Self.crc32(tensor) == c.crc32_tensor
            print("preprocess \(label): crop exact=\(cropExact) tensor exact=\(tensorExact) sampled max |err|=\(sampleMax)"
                + " mean err=\(abs(sum / n - c.mean)) mean|x| err=\(abs(sumAbs / n - c.mean_abs))"
                + (c.npy != nil ? " full-tensor mean |err|=\(fullMeanAbsError) max |err|=\(fullMaxError)" : ""))
            XCTAssertLessThan(abs(sum / n - c.mean), 0.005, label)
            XCTAssertLessThan(abs(sumAbs / n - c.mean_abs), 0.005, label)
            XCTAssertLessThan(sampleMax, 0.05, label)
            if c.file.hasSuffix(".png") {
                XCTAssertTrue(cropExact, "\(label): the resized crop must be bit-exact for PNG input")
                XCTAssertTrue(tensorExact, "\(label): the tensor must be bit-exact for PNG input")
            } else if cropExact {
                XCTAssertTrue(tensorExact, "\(label): an exact crop must give an exact tensor")
            }
        }
    }

    func testPreprocessImageEntryPoint() throws {
        let t = try preprocessImage(path: Self.path("rgba.png"), channels: .bgr)
        let c = Self.expected.preprocess.first { $0.file == "rgba.png" && $0.channels == "bgr" && $0.size == 224 }!
        XCTAssertEqual(Self.crc32(t), c.crc32_tensor)
        let big = try preprocessImage(path: Self.path("photo.jpg"), channels: .bgr, size: 336)
        XCTAssertEqual(big.shape, [3, 336, 336])
        XCTAssertThrowsError(try preprocessImage(path: Self.path("photo.jpg"), channels: .bgr, size: 0))
    }

    /// BGR and RGB tensors hold the same pixels with channels 0 and 2 exchanged; only the
    /// normalisation constants (indexed by tensor channel) differ.
    func testBGRAndRGBDifferOnlyInChannelOrder() throws {
        let image = try ImageDecoder.decode(path: Self.path("photo.jpg"))
        let bgr = CLIPPreprocessor(channels: .bgr)(image)
        let rgb = CLIPPreprocessor(channels: .rgb)(image)
        let plane = 224 * 224
        let mean = CLIPPreprocessor.mean, std = CLIPPreprocessor.std
        var maxErr: Float = 0
        for c in 0..<3 {
            for i in 0..<plane {
                let fromBGR = bgr.floats[c * plane + i] * std[c] + mean[c]
                let fromRGB = rgb.floats[(2 - c) * plane + i] * std[2 - c] + mean[2 - c]
                maxErr = max(maxErr, abs(fromBGR - fromRGB))
            }
        }
        XCTAssertLessThan(maxErr, 1e-5)
        // And they really differ: blue is not red in this picture.
        XCTAssertNotEqual(Self.crc32(bgr), Self.crc32(rgb))
    }

    // MARK: Refusals

    func testImagesOverTheLimitAreRefusedFromTheHeader() throws {
        // PNG: signature, IHDR 10000 x 10000 RGB8 (valid CRC), and the start of an IDAT chunk;
        // libpng stops reading the header at IDAT, where the size check happens.
        var ihdr: [UInt8] = Array("IHDR".utf8)
        ihdr += [0, 0, 0x27, 0x10, 0, 0, 0x27, 0x10, 8, 2, 0, 0, 0]
        var png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13] + ihdr
        let crc = Self.crc32(ihdr)
        png += [UInt8(crc >> 24), UInt8((crc >> 16) & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8(crc & 0xFF)]
        png += [0, 0, 0, 10] + Array("IDAT".utf8) + [UInt8](repeating: 0, count: 14)
        XCTAssertThrowsError(try Self.decode(bytes: png, name: "huge.png")) { error in
            XCTAssertEqual(error as? AdapterError, .unsupported("huge.png: 10000x10000 image (100000000 pixels) exceeds the limit of \(ImageDecoder.maximumPixelCount) pixels (raise it with --max-image-pixels)"))
        }
        // JPEG: photo.jpg with its SOF0 dimensions patched to 9000 x 9000.
        var jpeg = Self.bytes("photo.jpg")
        var i = 2
        var patched = false
        while i + 9 < jpeg.count {
            guard jpeg[i] == 0xFF else { break }
            let marker = jpeg[i + 1]
            let length = Int(jpeg[i + 2]) << 8 | Int(jpeg[i + 3])
            if marker == 0xC0 {
                jpeg[i + 5] = 0x23; jpeg[i + 6] = 0x28  // height 9000
                jpeg[i + 7] = 0x23; jpeg[i + 8] = 0x28  // width 9000
                patched = true
                break
            }
            i += 2 + length
        }
        XCTAssertTrue(patched)
        XCTAssertThrowsError(try Self.decode(bytes: jpeg, name: "huge.jpg")) { error in
            XCTAssertTrue((error as? AdapterError)?.description.contains("9000x9000 image (81000000 pixels) exceeds") ?? false, "\(error)")
        }
        // The limit is a parameter: the 320 x 240 photo is refused under a 76799-pixel limit.
        XCTAssertThrowsError(try ImageDecoder.decode(path: Self.path("photo.jpg"), maximumPixelCount: 320 * 240 - 1))
        XCTAssertNoThrow(try ImageDecoder.decode(path: Self.path("photo.jpg"), maximumPixelCount: 320 * 240))
    }

    func testCorruptTruncatedAndMissingFilesThrowOneLineErrors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("image-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let photo = Self.bytes("photo.jpg"), rgba = Self.bytes("rgba.png"), exif6 = Self.bytes("exif6.jpg")
        let cases: [(String, [UInt8])] = [
            ("half.jpg", Array(photo[0..<(photo.count / 2)])),
            ("three-quarters.jpg", Array(exif6[0..<(exif6.count * 3 / 4)])),
            ("last-data-byte-missing.jpg", Array(photo.dropLast(3))),
            ("header-only.jpg", Array(photo[0..<200])),
            ("soi-only.jpg", [0xFF, 0xD8, 0xFF]),
            ("half.png", Array(rgba[0..<(rgba.count / 2)])),
            ("no-iend.png", Array(rgba[0..<(rgba.count - 12)])),
            ("signature-only.png", Array(rgba[0..<8])),
            ("bad-crc.png", { var b = rgba; b[20] ^= 0xFF; return b }()),
            ("empty.png", []),
            ("text.jpg", Array("not an image at all\n".utf8)),
            ("gif.gif", Array("GIF89a".utf8) + [UInt8](repeating: 0, count: 20)),
        ]
        for (name, data) in cases {
            let url = dir.appendingPathComponent(name)
            try Data(data).write(to: url)
            XCTAssertThrowsError(try ImageDecoder.decode(path: url.path), name) { error in
                guard let e = error as? AdapterError else { return XCTFail("\(name): \(error) is not an AdapterError") }
                XCTAssertTrue(e.description.contains(url.path), "\(name): \(e)")
                XCTAssertFalse(e.description.contains("\n"), "\(name): \(e)")
                print("refused \(name): \(e)")
            }
        }
        XCTAssertThrowsError(try ImageDecoder.decode(path: dir.appendingPathComponent("missing.png").path)) { error in
            XCTAssertTrue("\(error)".contains("missing.png"))
        }
        XCTAssertThrowsError(try ImageDecoder.decode(path: dir.path)) { error in
            XCTAssertTrue("\(error)".contains("directory"), "\(error)")
        }
    }

    /// A JPEG that lacks only its final EOI marker decodes (cv2.imread gives the same pixels as for
    /// the complete file: checked with cv2 4.6 on these three files); only missing entropy data is
    /// refused.
    func testJPEGWithoutEOIStillDecodes() throws {
        for name in ["photo.jpg", "progressive.jpg", "exif6.jpg"] {
            let full = Self.bytes(name)
            XCTAssertEqual(Array(full.suffix(2)), [0xFF, 0xD9])
            XCTAssertEqual(try Self.decode(bytes: Array(full.dropLast(2)), name: name), try ImageDecoder.decode(path: Self.path(name)), name)
        }
    }

    /// 300 mutations (bit flips, byte runs, truncations, insertions; PNG mutations also with fixed
    /// chunk CRCs so they reach zlib and the filters): each decodes or throws, never traps.
    func testFuzzedImagesNeverTrap() {
        var rng = ImageFuzzRNG(seed: 0x1234_5678)
        let seeds = ["photo.jpg", "progressive.jpg", "exif6.jpg", "cmyk.jpg", "rgba.png", "palette.png", "bilevel.png", "gray16.png", "exif8.png"]
            .map { ($0, Self.bytes($0)) }
        var decoded = 0, refused = 0
        for iteration in 0..<300 {
            let (name, original) = seeds[iteration % seeds.count]
            var data = original
            switch rng.next() % 5 {
            case 0:
                for _ in 0..<(1 + Int(rng.next() % 8)) {
                    let i = Int(rng.next() % UInt64(data.count))
                    data[i] ^= UInt8(1 << (rng.next() % 8))
                }
            case 1:
                let i = Int(rng.next() % UInt64(data.count))
                let n = min(data.count - i, 1 + Int(rng.next() % 16))
                for k in i..<(i + n) { data[k] = UInt8(truncatingIfNeeded: rng.next()) }
            case 2:
                data = Array(data[0..<Int(rng.next() % UInt64(data.count))])
            case 3:
                let i = Int(rng.next() % UInt64(data.count))
                data.insert(contentsOf: (0..<(1 + Int(rng.next() % 32))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, at: i)
            default:
                let i = 8 + Int(rng.next() % UInt64(data.count - 8))
                data[i] = UInt8(truncatingIfNeeded: rng.next())
                if name.hasSuffix(".png") { Self.fixPNGChunkCRCs(&data) }
            }
            do {
                let image = try Self.decode(bytes: data, name: "\(name)#\(iteration)", limit: 4_000_000)
                XCTAssertEqual(image.pixels.count, image.width * image.height * 3)
                decoded += 1
            } catch is AdapterError {
                refused += 1
            } catch {
                XCTFail("\(name)#\(iteration): unexpected error type \(error)")
            }
        }
        print("fuzz: \(decoded) decoded, \(refused) refused")
        XCTAssertEqual(decoded + refused, 300)
    }

    /// Recomputes the CRC of every complete chunk so that mutations get past libpng's CRC check.
    static func fixPNGChunkCRCs(_ data: inout [UInt8]) {
        var i = 8
        while i + 12 <= data.count {
            let length = Int(data[i]) << 24 | Int(data[i + 1]) << 16 | Int(data[i + 2]) << 8 | Int(data[i + 3])
            guard length >= 0, i + 12 + length <= data.count else { return }
            let crc = crc32(data[(i + 4)..<(i + 8 + length)])
            data[i + 8 + length] = UInt8(crc >> 24)
            data[i + 9 + length] = UInt8((crc >> 16) & 0xFF)
            data[i + 10 + length] = UInt8((crc >> 8) & 0xFF)
            data[i + 11 + length] = UInt8(crc & 0xFF)
            i += 12 + length
        }
    }

    // MARK: NPY

    func testNPYRoundTripAndNumPyCompatibility() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("npy-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var rng = ImageFuzzRNG(seed: 7)
        let values = (0..<60).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & 0xBFFF_FFFF) }
        for shape in [[3, 4, 5], [60], [1, 60], [2, 0, 3]] {
            let count = shape.reduce(1, *)
            let p = dir.appendingPathComponent("a.npy").path
            try NPY.write(Array(values[0..<count]), shape: shape, to: p)
            let raw = [UInt8](FileManager.default.contents(atPath: p)!)
            let headerLength = Int(raw[8]) | Int(raw[9]) << 8
            XCTAssertEqual((10 + headerLength) % 64, 0, "data is 64-byte aligned as NumPy writes it")
            XCTAssertEqual(raw[10 + headerLength - 1], 0x0A)
            let back = try NPY.read(path: p)
            XCTAssertEqual(back.shape, shape)
            XCTAssertEqual(back.descr, "<f4")
            XCTAssertEqual(try back.floats().map(\.bitPattern), values[0..<count].map(\.bitPattern))
        }
        // Byte-identical to numpy.save for the same tensor (rgba.png is exact, so its tensor is too).
        let tensor = try preprocessImage(path: Self.path("rgba.png"), channels: .bgr)
        let p = dir.appendingPathComponent("t.npy").path
        try NPY.write(tensor, to: p)
        XCTAssertEqual(FileManager.default.contents(atPath: p), FileManager.default.contents(atPath: Self.path("rgba_bgr.npy")))
        XCTAssertThrowsError(try NPY.write([1, 2, 3], shape: [2, 2], to: p))
        XCTAssertThrowsError(try NPY.parse(Array("\u{93}NUMPY".utf8), name: "short"))
    }
}

/// Deterministic generator for the fuzz test (SplitMix64).
fileprivate struct ImageFuzzRNG {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
