import AdapterCore
import CImageCodecs
import Foundation

/// Reads JPEG and PNG files into `RGBImage`s with the pixels `cv2.imread(path)` (IMREAD_COLOR, OpenCV
/// 4.6 as in Debian 12) produces, channel order aside: the official LLaMA-Adapter code reads every
/// image with cv2, so these pixels are what its CLIP transform sees.
///
/// What cv2 does, and so what this does (checked against cv2 4.6 with the same libjpeg-turbo 2.1.5
/// and libpng 1.6.39; see `tools/reference/make_image_fixtures.py`):
/// - The format comes from the file's first bytes, not its extension.
/// - PNG: alpha is dropped, not composited (RGBA, grey+alpha, and palette or colour-key
///   transparency alike); grey is replicated to three channels; 1/2/4-bit grey is expanded to 8 bits;
///   16-bit samples keep their high byte (`v >> 8`, truncation, not `round(v / 257)`); gAMA, sRGB and
///   iCCP chunks are ignored.
/// - JPEG: libjpeg's default (ISLOW) IDCT and fancy upsampling; grey is replicated; CMYK/YCCK goes
///   through OpenCV's own CMYK formula.
/// - The EXIF orientation tag is applied for both JPEG (first APP1 segment) and PNG (eXIf chunk).
///
/// Differences, on purpose: images over `maximumPixelCount` are refused before any pixel memory is
/// allocated; a JPEG whose entropy data is cut short is an error (cv2.imread prints "Premature end
/// of JPEG file" and returns the image with the missing part grey), while one that lacks only its
/// final EOI marker decodes to cv2's pixels; a progressive JPEG may have at most 1000 scans. Other
/// libjpeg warnings (corrupt data) are ignored as cv2 ignores them, so such files give cv2's pixels.
/// Every failure is a one-line `AdapterError` naming the file; malformed input never traps.
public enum ImageDecoder {
    /// Default pixel limit: 8192 x 8192 (64 Mi pixels, 192 MiB decoded). Larger images are refused
    /// before decoding: they are almost always mistakes or hostile files, and the model only needs 224².
    /// Process-wide default; the CLI's `--max-image-pixels` sets it once at start-up, before any decoding.
    nonisolated(unsafe) public static var maximumPixelCount = 8192 * 8192

    /// Decodes the JPEG or PNG file at `path`.
    public static func decode(path: String, maximumPixelCount: Int = ImageDecoder.maximumPixelCount) throws -> RGBImage {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe)
        } catch {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
                throw AdapterError.io(isDirectory.boolValue ? "\(path) is a directory, expected an image file" : "cannot read image \(path)")
            }
            throw AdapterError.io("image file \(path) does not exist")
        }
        return try data.withUnsafeBytes { try decode(bytes: $0, name: path, maximumPixelCount: maximumPixelCount) }
    }

    /// Decodes an in-memory JPEG or PNG file; `name` is used in error messages.
    public static func decode(bytes: UnsafeRawBufferPointer, name: String,
                              maximumPixelCount: Int = ImageDecoder.maximumPixelCount) throws -> RGBImage {
        let format = detectFormat(bytes)
        guard format != .unknown, let base = bytes.baseAddress else {
            throw AdapterError.unsupported("\(name): not a JPEG or PNG image" + (bytes.isEmpty ? " (empty file)" : ""))
        }
        let limit = UInt64(max(0, maximumPixelCount))
        var result = ci_image()
        defer { ci_image_free(&result) }
        let status: Int32
        switch format {
        case .jpeg:
            status = ci_decode_jpeg(base.assumingMemoryBound(to: UInt8.self), UInt(bytes.count), limit, &result)
        case .png:
            status = ci_decode_png(base.assumingMemoryBound(to: UInt8.self), bytes.count, limit, &result)
        case .unknown:
            status = Int32(CI_ERROR)
        }
        let kind = format == .jpeg ? "JPEG" : "PNG"
        switch status {
        case Int32(CI_OK):
            break
        case Int32(CI_TOO_LARGE):
            let pixels = UInt64(result.width) * UInt64(result.height)
            throw AdapterError.unsupported("\(name): \(result.width)x\(result.height) image (\(pixels) pixels) exceeds the limit of \(maximumPixelCount) pixels (raise it with --max-image-pixels)")
        case Int32(CI_NO_MEMORY):
            throw AdapterError.io("\(name): out of memory decoding a \(result.width)x\(result.height) \(kind)")
        default:
            let message = withUnsafeBytes(of: result.message) { raw -> String in
                let bytes = raw.bindMemory(to: UInt8.self)
                let end = bytes.firstIndex(of: 0) ?? bytes.count
                return String(decoding: bytes[0..<end], as: UTF8.self)
            }
            let oneLine = message.split(whereSeparator: \.isNewline).joined(separator: " ")
            throw AdapterError.format("\(name): corrupt or unreadable \(kind) (\(oneLine.isEmpty ? "decoder error" : oneLine))")
        }
        let width = Int(result.width), height = Int(result.height)
        guard width > 0, height > 0, let pixelPointer = result.pixels else {
            throw AdapterError.format("\(name): \(kind) has no pixels")
        }
        let pixels = [UInt8](UnsafeBufferPointer(start: pixelPointer, count: width * height * 3))
        var image = RGBImage(width: width, height: height, pixels: pixels)
        if let exif = result.exif, result.exif_size > 0 {
            let block = [UInt8](UnsafeBufferPointer(start: exif, count: Int(result.exif_size)))
            if let orientation = exifOrientation(block) {
                image = image.applyingEXIFOrientation(orientation)
            }
        }
        return image
    }

    /// The container formats this decoder recognises by their first bytes.
    enum Format { case jpeg, png, unknown }

    /// Signature test as OpenCV's `findDecoder` does it: JPEG starts FF D8 FF, PNG with its 8-byte
    /// signature.
    static func detectFormat(_ bytes: UnsafeRawBufferPointer) -> Format {
        if bytes.count >= 3, bytes[0] == 0xFF, bytes[1] == 0xD8, bytes[2] == 0xFF { return .jpeg }
        let png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        if bytes.count >= 8, (0..<8).allSatisfy({ bytes[$0] == png[$0] }) { return .png }
        return .unknown
    }

    /// The orientation OpenCV 4.6's `ExifReader` reports for a TIFF-structured EXIF block, or nil when
    /// it reports none (then cv2 leaves the image alone).
    ///
    /// Mirrors its quirks so that rotations agree even on odd files: the byte order is Intel only for
    /// "II" and Motorola otherwise; only IFD0 is read; the value is read as a 16-bit number at the
    /// entry's value offset whatever the field type says; the first orientation entry wins; and a read
    /// past the end while walking the entries (including the extra reads OpenCV makes for string and
    /// rational tags) stops the walk but keeps the entries already seen.
    public static func exifOrientation(_ data: [UInt8]) -> Int? {
        guard !data.isEmpty else { return nil }
        let intel: Bool = {
            if data.count > 1 && data[0] != data[1] { return false }
            return data[0] == UInt8(ascii: "I")
        }()
        struct OutOfRange: Error {}
        func u16(_ offset: Int) throws -> Int {
            guard offset >= 0, offset + 1 < data.count else { throw OutOfRange() }
            return intel ? Int(data[offset]) | Int(data[offset + 1]) << 8 : Int(data[offset]) << 8 | Int(data[offset + 1])
        }
        func u32(_ offset: Int) throws -> UInt32 {
            guard offset >= 0, offset + 3 < data.count else { throw OutOfRange() }
            let b = (UInt32(data[offset]), UInt32(data[offset + 1]), UInt32(data[offset + 2]), UInt32(data[offset + 3]))
            return intel ? b.0 | b.1 << 8 | b.2 << 16 | b.3 << 24 : b.0 << 24 | b.1 << 16 | b.2 << 8 | b.3
        }
        // Rationals at a 32-bit offset read from the entry; the offset arithmetic is uint32 in OpenCV.
        func rationals(_ entry: Int, count: Int) throws {
            var at = try u32(entry + 8)
            for _ in 0..<count {
                _ = try u32(Int(at))
                _ = try u32(Int(at) + 4)
                at = at &+ 8
            }
        }
        var orientation: Int?
        do {
            guard try u16(2) == 0x2A else { return nil }
            var offset = Int(try u32(4))
            let count = try u16(offset)
            offset += 2
            for _ in 0..<count {
                let tag = try u16(offset)
                switch tag {
                case 0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x8298:
                    // getString: the data sits at absolute offset 8 when it fits in 4 bytes (an
                    // OpenCV quirk), else at the stored offset; out of range throws.
                    let size = Int(try u32(offset + 4))
                    let dataOffset = size > 4 ? Int(try u32(offset + 8)) : 8
                    if dataOffset > data.count || dataOffset + size > data.count { throw OutOfRange() }
                case 0x0112:
                    let value = try u16(offset + 8)
                    if orientation == nil { orientation = value }
                case 0x011A, 0x011B: try rationals(offset, count: 1)
                case 0x013E: try rationals(offset, count: 2)
                case 0x013F: try rationals(offset, count: 6)
                case 0x0211: try rationals(offset, count: 3)
                case 0x0214: try rationals(offset, count: 6)
                case 0x0128, 0x0213: _ = try u16(offset + 8)
                default: break
                }
                offset += 12
            }
        } catch {
            // The walk stops; entries already read still count, as in OpenCV's map.
        }
        return orientation
    }
}

extension RGBImage {
    /// Writes the image as an 8-bit RGB PNG (libpng), e.g. for generated training data.
    public func writePNG(to path: String) throws {
        guard width > 0, height > 0 else { throw AdapterError.invalidArgument("cannot write an empty image to \(path)") }
        var message = [CChar](repeating: 0, count: 64)
        let status = pixels.withUnsafeBufferPointer { ci_write_png_rgb(path, Int32(width), Int32(height), $0.baseAddress, &message) }
        guard status == 0 else {
            throw AdapterError.io("cannot write \(path): \(String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))")
        }
    }
}
