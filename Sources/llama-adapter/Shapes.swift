import ArgumentParser
import Foundation
import LlamaAdapter

/// `llama-adapter shapes`: writes a shapes-world data set (images, captions, questions).
struct Shapes: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Render a shapes-world data set: images/, captions.tsv, questions.json, scenes.jsonl.",
        discussion: """
        Square canvases of 160-448 px in one light colour hold 1-3 non-overlapping filled circles, squares and \
        triangles (apex up) of 18-40% of the side, in red, green, blue or yellow with jitter; no two shapes share \
        both shape and colour. captions.tsv is caption data for finetune --caption-data; questions.json holds image \
        conversations ("What color is the circle?" -> "Red.") for --data and for eval, which reads their kind and \
        answer fields. --blanks also writes the empty canvases (eval's control).
        """)

    @Option(help: "Output folder (created).")
    var out: String

    @Option(help: "Images to render.")
    var images: Int = 1000

    @Option(help: "Seed (use another one for a held-out set).")
    var seed: UInt64 = 0

    @Option(name: .customLong("questions-per-image"), help: "Questions per image (the four kinds in turn).")
    var questionsPerImage: Int = 2

    @Flag(help: "Also write blank/NNNNN.png, each image's empty canvas (the evaluation's control).")
    var blanks = false

    func run() throws {
        var w = ShapesWorldWriter(images: images, seed: seed)
        w.questionsPerImage = questionsPerImage
        w.blanks = blanks
        let start = Date()
        let n = try w.write(to: out)
        FileHandle.standardError.write(Data(String(format: "wrote %d images and %d questions to %@ in %.1f s\n", images, n, out,
                                                   Date().timeIntervalSince(start)).utf8))
    }
}

/// `llama-adapter eval`: accuracy of a visual adapter on question records with one-word answers.
struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Accuracy on image questions with one-word answers (shapes questions.json), with the image and with a blank control.",
        discussion: """
        Each record of --data (image conversations with "answer", optional "kind" and "blank" fields, as `shapes \
        --blanks` writes them) is asked greedily with the adapter's template; an answer counts when its first word \
        equals the expected one (case and punctuation ignored). Prints accuracy per kind with the image, with the \
        blank canvas (the control: near chance means the answers come from the image), and chance.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var adapterOptions: AdapterOptions

    @Option(help: "questions.json of a shapes data set (or any image conversations with an answer field).")
    var data: String

    @Option(help: "Evaluate at most this many records (0: all).")
    var limit: Int = 0

    @Flag(name: .customLong("no-blank"), help: "Skip the blank-canvas control.")
    var noBlank = false

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    @Option(name: .customLong("max-new-tokens"), help: "Tokens generated per answer.")
    var maxNewTokens: Int = 4

    struct Record: Decodable {
        var image: String
        var kind: String?
        var answer: String
        var blank: String?
        var conversations: [Turn]
        struct Turn: Decodable { var value: String }
    }

    struct Row: Encodable {
        var kind: String
        var questions: Int
        var image: Double
        var blank: Double?
        var chance: Double?
    }

    struct Output: Encodable {
        var rows: [Row]
        var overall: Row
        var seconds: Double
    }

    static func firstWord(_ s: String) -> String {
        let words = s.lowercased().split { !$0.isLetter && !$0.isNumber }
        return words.first.map(String.init) ?? ""
    }

    func run() throws {
        guard limit >= 0 else { throw AdapterError.invalidArgument("--limit must be non-negative") }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: data))
        var records: [Record]
        do { records = try JSONDecoder().decode([Record].self, from: bytes) } catch {
            throw AdapterError.format("\(data): not a list of image conversations with answer fields (\(error.localizedDescription))")
        }
        if limit > 0 { records = Array(records.prefix(limit)) }
        guard !records.isEmpty else { throw AdapterError.invalidArgument("\(data) has no records") }
        let base = (data as NSString).deletingLastPathComponent
        func resolve(_ p: String) -> String { p.hasPrefix("/") ? p : base + "/" + p }
        let container = try loadContainer(modelOptions, adapterOptions)
        guard container.model.adapter?.visual != nil, container.clip != nil else {
            throw AdapterError.invalidArgument("eval needs a visual adapter (--adapter) and its encoder (--clip)")
        }
        let start = Date()
        var correct: [String: (image: Int, blank: Int, total: Int, blanks: Int)] = [:]
        // Each image is asked several questions: encode it once.
        var contexts: [String: ImageContext] = [:]
        for (i, r) in records.enumerated() {
            guard let question = r.conversations.first?.value else { continue }
            let prompt = container.tokenizer.encodePrompt(PromptTemplate.alpaca(question))
            func ask(_ path: String) throws -> Bool {
                let file = resolve(path)
                let ctx = try contexts[file] ?? container.encodeImage(path: file, channels: adapterOptions.channels)
                contexts[file] = ctx
                let session = try container.makeSession(image: ctx, fusion: adapterOptions.fusion(container), options: modelOptions.decoderOptions,
                                                        capacity: prompt.count + maxNewTokens)
                let out = try session.generate(prompt: prompt, maxNewTokens: maxNewTokens, sampling: .greedy)
                return Self.firstWord(out.text) == Self.firstWord(r.answer)
            }
            let kind = r.kind ?? "all"
            var c = correct[kind] ?? (0, 0, 0, 0)
            c.total += 1
            if try ask(r.image) { c.image += 1 }
            if !noBlank, let b = r.blank {
                c.blanks += 1
                if try ask(b) { c.blank += 1 }
            }
            correct[kind] = c
            if !json, (i + 1) % 50 == 0 {
                FileHandle.standardError.write(Data("\r\(i + 1)/\(records.count) questions".utf8))
            }
        }
        if !json { FileHandle.standardError.write(Data("\r".utf8)) }
        func row(_ kind: String, _ c: (image: Int, blank: Int, total: Int, blanks: Int), chance: Double?) -> Row {
            Row(kind: kind, questions: c.total, image: Double(c.image) / Double(max(c.total, 1)),
                blank: c.blanks > 0 ? Double(c.blank) / Double(c.blanks) : nil, chance: chance)
        }
        let kinds = correct.keys.sorted()
        let rows = kinds.map { row($0, correct[$0]!, chance: ShapeQuestionKind(rawValue: $0)?.chance) }
        let sum = correct.values.reduce((0, 0, 0, 0)) { ($0.0 + $1.image, $0.1 + $1.blank, $0.2 + $1.total, $0.3 + $1.blanks) }
        let chanceAll = kinds.allSatisfy { ShapeQuestionKind(rawValue: $0) != nil }
            ? kinds.reduce(0.0) { $0 + ShapeQuestionKind(rawValue: $1)!.chance * Double(correct[$1]!.total) } / Double(max(sum.2, 1)) : nil
        let overall = row("overall", sum, chance: chanceAll)
        let seconds = Date().timeIntervalSince(start)
        if json {
            try printJSON(Output(rows: rows, overall: overall, seconds: (seconds * 10).rounded() / 10))
            return
        }
        func pct(_ v: Double?) -> String { v.map { String(format: "%.3f", $0) } ?? "-" }
        print("| kind | questions | with image | blank canvas | chance |")
        print("|---|---|---|---|---|")
        for r in rows + [overall] { print("| \(r.kind) | \(r.questions) | \(pct(r.image)) | \(pct(r.blank)) | \(pct(r.chance)) |") }
        FileHandle.standardError.write(Data(String(format: "%.1f s\n", seconds).utf8))
    }
}
