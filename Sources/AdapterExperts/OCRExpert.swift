// Expert systems (paper section 4.4): models that turn an image into text the language model is given as
// context. The OCR expert is Tesseract through its C API.
import Foundation
import AdapterCore
import AdapterVision
import CTesseract

/// Tesseract OCR: the text of an image in reading order. Not thread-safe (one Tesseract engine per instance);
/// `recognize` serialises calls.
public final class OCRExpert: @unchecked Sendable {
    private let api: OpaquePointer
    private let lock = NSLock()
    /// Language data used (`eng` by default: Debian's `tesseract-ocr-eng`).
    public let language: String

    /// Starts an engine for `language`, reading `*.traineddata` from `dataPath` (default: Tesseract's own,
    /// e.g. /usr/share/tesseract-ocr/5/tessdata, or `TESSDATA_PREFIX`).
    public init(language: String = "eng", dataPath: String? = nil) throws {
        guard let api = TessBaseAPICreate() else { throw AdapterError.io("cannot start Tesseract") }
        // Tesseract prints diagnostics ("Estimating resolution...") to stderr unless told otherwise.
        _ = TessBaseAPISetVariable(api, "debug_file", "/dev/null")
        let status = language.withCString { lang in
            if let dataPath { return dataPath.withCString { TessBaseAPIInit3(api, $0, lang) } }
            return TessBaseAPIInit3(api, nil, lang)
        }
        guard status == 0 else {
            TessBaseAPIDelete(api)
            throw AdapterError.io("Tesseract has no '\(language)' language data (install tesseract-ocr-\(language), or set TESSDATA_PREFIX)")
        }
        self.api = api
        self.language = language
    }

    deinit {
        TessBaseAPIEnd(api)
        TessBaseAPIDelete(api)
    }

    /// The recognised text of `image` (RGB, 8-bit), lines in reading order, trailing whitespace trimmed,
    /// runs of blank lines collapsed.
    public func recognize(_ image: RGBImage) throws -> String {
        guard image.width > 0, image.height > 0 else { throw AdapterError.invalidArgument("OCR: empty image") }
        lock.lock()
        defer { lock.unlock() }
        let text: String = image.pixels.withUnsafeBufferPointer { px in
            TessBaseAPISetImage(api, px.baseAddress, Int32(image.width), Int32(image.height), 3, Int32(image.width * 3))
            TessBaseAPISetSourceResolution(api, 300)
            guard let raw = TessBaseAPIGetUTF8Text(api) else { return "" }
            defer { TessDeleteText(raw) }
            return String(cString: raw)
        }
        TessBaseAPIClear(api)
        var lines: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let t = line.replacingOccurrences(of: "\u{0C}", with: "").trimmingCharacters(in: .whitespaces)
            if t.isEmpty, lines.last?.isEmpty ?? true { continue }
            lines.append(t)
        }
        while lines.last?.isEmpty == true { lines.removeLast() }
        return lines.joined(separator: "\n")
    }

    /// OCR of the image file at `path` (JPEG or PNG).
    public func recognize(path: String) throws -> String {
        try recognize(ImageDecoder.decode(path: path))
    }
}

/// Which expert produces context.
public enum ExpertKind: String, Sendable, CaseIterable {
    /// Tesseract OCR: the image's text.
    case ocr
    /// A caption of the image from the visual adapter itself (the official caption instruction).
    case caption
}

/// The experts' outputs as one textual context for the Alpaca `### Input:` field: a single expert's text as
/// is; several, each under a short label.
public func expertContext(_ outputs: [(ExpertKind, String)]) -> String {
    if outputs.count == 1 { return outputs[0].1 }
    return outputs.map { kind, text in
        (kind == .ocr ? "Text in the image:\n" : "Caption of the image:\n") + text
    }.joined(separator: "\n\n")
}
