// Training data in the official formats (llama_adapter_v2_multimodal7b/data/dataset.py): instruction JSON
// (`instruction`, `input`, `output`), image conversations (`image`, `conversations`), caption TSV (`url`,
// `caption`). Local files only: a path is resolved against the data file's folder and nothing is fetched.
import Foundation
import AdapterCore
import AdapterModel
import AdapterFormats
import AdapterTokenizers
import AdapterGeneration
import AdapterVision

/// One training example before tokenisation.
public enum TrainingSample: Sendable, Equatable {
    /// Alpaca-style text: instruction, optional input (nil: the key is missing), answer.
    case instruction(instruction: String, input: String?, output: String)
    /// An image conversation: the image's resolved path, the first (human) turn and the second (answer) turn.
    case image(path: String, question: String, answer: String)
    /// A caption pair: the image's resolved path and its caption (instruction "Generate caption of this image").
    case caption(path: String, caption: String)

    /// The image the sample reads, if any.
    public var imagePath: String? {
        switch self {
        case .instruction: return nil
        case .image(let p, _, _), .caption(let p, _): return p
        }
    }
}

/// A data file read into samples.
public struct TrainingDataset: Sendable {
    /// The file.
    public let path: String
    /// Its samples in file order.
    public let samples: [TrainingSample]

    /// Reads `path`: a JSON array (or JSON Lines) of instruction / image-conversation records, or a TSV with a
    /// header naming `url` and `caption` columns. A malformed record is an error naming the file and record.
    public static func load(path: String) throws -> TrainingDataset {
        guard FileManager.default.fileExists(atPath: path) else { throw AdapterError.io("data file \(path) does not exist") }
        _ = try FileFormat.detect(path: path)
        guard let data = FileManager.default.contents(atPath: path) else { throw AdapterError.io("cannot read data file \(path)") }
        guard let text = String(data: data, encoding: .utf8) else { throw AdapterError.format("\(path): not UTF-8 text") }
        let base = (path as NSString).deletingLastPathComponent
        let trimmed = text.drop { $0.isWhitespace }
        let samples: [TrainingSample]
        if trimmed.first == "[" {
            guard let array = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) as? [Any] else {
                throw AdapterError.format("\(path): not valid JSON (expected an array of records)")
            }
            samples = try array.enumerated().map { try record($1, index: $0 + 1, path: path, base: base) }
        } else if trimmed.first == "{" {
            var out: [TrainingSample] = []
            for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                if line.allSatisfy({ $0.isWhitespace }) { continue }
                guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) else {
                    throw AdapterError.format("\(path): line \(i + 1) is not valid JSON")
                }
                out.append(try record(obj, index: i + 1, path: path, base: base))
            }
            samples = out
        } else {
            samples = try captions(text, path: path, base: base)
        }
        guard !samples.isEmpty else { throw AdapterError.format("\(path): no training records") }
        return TrainingDataset(path: path, samples: samples)
    }

    private static func resolve(_ p: String, base: String) -> String {
        p.hasPrefix("/") ? p : (base.isEmpty ? p : base + "/" + p)
    }

    private static func record(_ obj: Any, index: Int, path: String, base: String) throws -> TrainingSample {
        func bad(_ why: String) -> AdapterError { .format("\(path): record \(index): \(why)") }
        guard let d = obj as? [String: Any] else { throw bad("not a JSON object") }
        if let image = d["image"] {
            guard let file = image as? String, !file.isEmpty else { throw bad("'image' must be a file path") }
            if file.contains("://") { throw bad("'image' is a URL; only local files are read (nothing is downloaded)") }
            guard let conv = d["conversations"] as? [[String: Any]], conv.count >= 2,
                  let q = conv[0]["value"] as? String, let a = conv[1]["value"] as? String else {
                throw bad("'conversations' must hold at least two turns with string 'value's")
            }
            return .image(path: resolve(file, base: base), question: q, answer: a)
        }
        guard let instruction = d["instruction"] as? String else { throw bad("missing string 'instruction' (or 'image' + 'conversations')") }
        guard let output = d["output"] as? String else { throw bad("missing string 'output'") }
        var input: String?
        if let i = d["input"], !(i is NSNull) {
            guard let s = i as? String else { throw bad("'input' must be a string") }
            input = s
        }
        return .instruction(instruction: instruction, input: input, output: output)
    }

    /// pandas.read_csv(sep='\t'): a header row, then one record per line; `url` is a local image path.
    private static func captions(_ text: String, path: String, base: String) throws -> [TrainingSample] {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? String($0.dropLast()) : String($0) }
        while lines.last?.isEmpty == true { lines.removeLast() }
        guard let header = lines.first else { throw AdapterError.format("\(path): empty caption file") }
        let cols = header.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        guard let u = cols.firstIndex(of: "url"), let c = cols.firstIndex(of: "caption") else {
            throw AdapterError.format("\(path): not JSON, and not a caption TSV (its header must name 'url' and 'caption' columns)")
        }
        var out: [TrainingSample] = []
        for (i, line) in lines.dropFirst().enumerated() {
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard f.count == cols.count else {
                throw AdapterError.format("\(path): record \(i + 1) (line \(i + 2)) has \(f.count) fields, the header \(cols.count)")
            }
            guard !f[u].isEmpty else { throw AdapterError.format("\(path): record \(i + 1) (line \(i + 2)) has an empty url") }
            if f[u].contains("://") {
                throw AdapterError.format("\(path): record \(i + 1) (line \(i + 2)): url is remote; only local files are read (nothing is downloaded)")
            }
            out.append(.caption(path: resolve(f[u], base: base), caption: f[c]))
        }
        return out
    }
}

/// Python's `str()` of a one-element tuple holding `s`: `('...',)` with repr's quoting and escapes. The
/// official dataset builds text-only instructions as `data_item['instruction'],` (a trailing comma), so its
/// prompts read like this; `--compat official` reproduces it.
public func pythonTupleRepr(_ s: String) -> String {
    let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
    var out = "(" + String(quote)
    for u in s.unicodeScalars {
        switch u {
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if Character(u) == quote { out += "\\" + String(quote); continue }
            if u.value < 0x20 || u.value == 0x7F { out += String(format: "\\x%02x", u.value); continue }
            if (0x80..<0xA0).contains(u.value) { out += String(format: "\\x%02x", u.value); continue }
            out.unicodeScalars.append(u)
        }
    }
    return out + String(quote) + ",)"
}

/// A tokenised example as the official data set returns it: `max_words` ids (padded with 0, truncated),
/// labels with the prompt and padding set to 0 (ignored by the loss).
public struct TokenizedSample: Sendable, Equatable {
    /// Input ids [maxWords] (padding 0).
    public var tokens: [Int]
    /// Labels [maxWords]: 0 on the prompt and padding.
    public var labels: [Int]
    /// Positions up to the last non-padding one; later positions change neither the loss nor any gradient
    /// (causal attention), so the trainer runs only these.
    public var length: Int

    /// A sample from ids and labels of equal length (0 labels are ignored); `length` defaults to all positions.
    public init(tokens: [Int], labels: [Int], length: Int? = nil) {
        self.tokens = tokens
        self.labels = labels
        self.length = length ?? tokens.count
    }
}

/// Prompt text and answer of a sample, as the official data set formats them.
public func formatTrainingText(_ sample: TrainingSample, compat: Compatibility) -> (prompt: String, answer: String) {
    switch sample {
    case .instruction(let instruction, let input, let output):
        let text = compat == .official ? pythonTupleRepr(instruction) : instruction
        return (PromptTemplate.alpaca(text, input: input), output)
    case .image(_, let q, let a):
        return (PromptTemplate.alpaca(q, input: nil), a)
    case .caption(_, let caption):
        return (PromptTemplate.alpaca("Generate caption of this image", input: nil), caption)
    }
}

/// Tokenises as `FinetuneDataset.__getitem__`: input1 = encode(prompt, bos), input2 = encode(prompt + answer,
/// bos, eos); pad with 0 / truncate to `maxWords`; labels = input2 with the first len(input1) positions and
/// the padding zeroed. BOS follows the tokenizer's rule (`addsBOS`), EOS is the tokenizer's.
public func tokenizeSample(_ sample: TrainingSample, tokenizer: any Tokenizer, maxWords: Int, compat: Compatibility) -> TokenizedSample {
    let (prompt, answer) = formatTrainingText(sample, compat: compat)
    let bos = tokenizer.addsBOS
    let input1 = tokenizer.encode(prompt, addBos: bos, addEos: false)
    var input2 = tokenizer.encode(prompt + answer, addBos: bos, addEos: true)
    var real = input2.count
    if input2.count > maxWords { input2 = Array(input2.prefix(maxWords)); real = maxWords }
    var labels = input2
    for i in 0..<min(input1.count, labels.count) { labels[i] = 0 }
    let pad = maxWords - input2.count
    if pad > 0 {
        input2 += [Int](repeating: 0, count: pad)
        labels += [Int](repeating: 0, count: pad)
    }
    return TokenizedSample(tokens: input2, labels: labels, length: real)
}

/// torchvision RandomResizedCrop(224, scale=(0.9, 1.0), ratio=(3/4, 4/3), bicubic) on a PIL image: the crop
/// box drawn as torchvision draws it (10 tries, then the centre fallback), then PIL's bicubic resize.
public func randomResizedCrop(_ image: RGBImage, size: Int, rng: inout TrainingRNG,
                              scale: (Double, Double) = (0.9, 1.0), ratio: (Double, Double) = (3.0 / 4.0, 4.0 / 3.0)) -> RGBImage {
    let W = image.width, H = image.height
    let area = Double(W * H)
    let logRatio = (log(ratio.0), log(ratio.1))
    for _ in 0..<10 {
        let target = area * rng.uniform(scale.0, scale.1)
        let aspect = exp(rng.uniform(logRatio.0, logRatio.1))
        let w = Int((target * aspect).squareRoot().rounded(.toNearestOrEven))
        let h = Int((target / aspect).squareRoot().rounded(.toNearestOrEven))
        if w > 0, h > 0, w <= W, h <= H {
            let i = rng.below(H - h + 1), j = rng.below(W - w + 1)
            return PillowResample.resizeBicubic(image.cropped(x: j, y: i, width: w, height: h), width: size, height: size)
        }
    }
    var w = W, h = H
    let inRatio = Double(W) / Double(H)
    if inRatio < ratio.0 { w = W; h = Int((Double(w) / ratio.0).rounded(.toNearestOrEven)) }
    else if inRatio > ratio.1 { h = H; w = Int((Double(h) * ratio.1).rounded(.toNearestOrEven)) }
    let i = (H - h) / 2, j = (W - w) / 2
    return PillowResample.resizeBicubic(image.cropped(x: j, y: i, width: min(w, W), height: min(h, H)), width: size, height: size)
}
