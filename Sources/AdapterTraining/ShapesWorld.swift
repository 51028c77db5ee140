// The shapes world: a synthetic visual question-answering task small enough to teach a 135M model to see in
// minutes on a laptop CPU, and hard enough that answers need the image (colour, shape, count and their binding).
// Square canvases of one light colour hold one to three filled circles, squares and triangles (apex up) in red,
// green, blue or yellow; each scene yields a caption (the visual path's data in joint training) and four kinds
// of questions with one-word answers (the instruction data and the evaluation).
import Foundation
import AdapterCore
import AdapterFormats
import AdapterVision
import Synchronization

/// A shape of the shapes world.
public enum ShapeKind: String, CaseIterable, Sendable, Codable {
    case circle, square, triangle
}

/// A colour of the shapes world (each drawn with jitter).
public enum ShapeColor: String, CaseIterable, Sendable, Codable {
    case red, green, blue, yellow

    /// Per-channel ranges the jittered colour is drawn from: wide enough to cover the pure and the "web" forms of
    /// each colour (255,0,0 and 220,40,40; 0,128,0 and 0,200,0), so another renderer's colours are in range.
    var ranges: [(Int, Int)] {
        switch self {
        case .red: return [(180, 255), (0, 70), (0, 70)]
        case .green: return [(0, 80), (110, 230), (0, 90)]
        case .blue: return [(0, 80), (0, 110), (160, 255)]
        case .yellow: return [(200, 255), (190, 255), (0, 80)]
        }
    }
}

/// One kind of question of the shapes world.
public enum ShapeQuestionKind: String, CaseIterable, Sendable, Codable {
    /// "What color is the {shape}?" (that shape occurs once) -> Red. / Green. / Blue. / Yellow.
    case color
    /// "What shape is the {color} object?" (that colour occurs once) -> Circle. / Square. / Triangle.
    case shape
    /// "How many shapes are there?" -> One. / Two. / Three.
    case count
    /// "Is there a {color} {shape}?" -> Yes. / No. (balanced)
    case exists

    /// The probability of answering right by guessing uniformly among this kind's answers.
    public var chance: Double {
        switch self {
        case .color: return 1.0 / 4
        case .shape, .count: return 1.0 / 3
        case .exists: return 1.0 / 2
        }
    }
}

/// A filled shape on the canvas: its bounding square is `size` pixels wide, centred at (`cx`, `cy`).
public struct ShapeItem: Sendable, Codable, Equatable {
    public var kind: ShapeKind
    public var color: ShapeColor
    public var rgb: [UInt8]
    public var cx: Double, cy: Double, size: Double

    /// A shape from its parts.
    public init(kind: ShapeKind, color: ShapeColor, rgb: [UInt8], cx: Double, cy: Double, size: Double) {
        self.kind = kind; self.color = color; self.rgb = rgb; self.cx = cx; self.cy = cy; self.size = size
    }

    /// Whether the point (x, y) (pixel units, continuous) is inside the shape.
    func contains(_ x: Double, _ y: Double) -> Bool {
        let h = size / 2
        switch kind {
        case .circle: return (x - cx) * (x - cx) + (y - cy) * (y - cy) <= h * h
        case .square: return abs(x - cx) <= h && abs(y - cy) <= h
        case .triangle:
            // Apex at the top centre, base along the bottom edge of the bounding square.
            let top = cy - h
            guard y >= top, y <= cy + h else { return false }
            return abs(x - cx) <= (y - top) / 2
        }
    }
}

/// One scene: canvas side, background colour and the shapes, left to right.
public struct ShapesScene: Sendable, Codable, Equatable {
    public var side: Int
    public var background: [UInt8]
    public var items: [ShapeItem]

    /// A scene from its parts (items left to right).
    public init(side: Int, background: [UInt8], items: [ShapeItem]) {
        self.side = side; self.background = background; self.items = items
    }

    /// Draws a random scene: side 160–448 px, a light background, 1–3 shapes of 18–40% of the side that do not
    /// overlap (their bounding squares keep 2 px apart) and lie inside the canvas, no two of the same kind and colour.
    public static func random(rng: inout TrainingRNG) -> ShapesScene {
        let side = 160 + rng.below(448 - 160 + 1)
        let background = (0..<3).map { _ in UInt8(215 + rng.below(41)) }
        while true {
            let n = 1 + rng.below(3)
            var items: [ShapeItem] = []
            var pairs = Set<String>()
            var ok = true
            for _ in 0..<n {
                var placed = false
                for _ in 0..<200 {
                    let kind = ShapeKind.allCases[rng.below(3)], color = ShapeColor.allCases[rng.below(4)]
                    if pairs.contains("\(kind)\(color)") { continue }
                    let size = Double(side) * rng.uniform(0.18, 0.40)
                    let h = size / 2
                    let cx = rng.uniform(h + 1, Double(side) - h - 1), cy = rng.uniform(h + 1, Double(side) - h - 1)
                    let clear = items.allSatisfy { o in
                        abs(o.cx - cx) >= (o.size + size) / 2 + 2 || abs(o.cy - cy) >= (o.size + size) / 2 + 2
                    }
                    guard clear else { continue }
                    let rgb = color.ranges.map { UInt8($0.0 + rng.below($0.1 - $0.0 + 1)) }
                    items.append(ShapeItem(kind: kind, color: color, rgb: rgb, cx: cx, cy: cy, size: size))
                    pairs.insert("\(kind)\(color)")
                    placed = true
                    break
                }
                if !placed { ok = false; break }
            }
            if ok { return ShapesScene(side: side, background: background, items: items.sorted { $0.cx < $1.cx }) }
        }
    }

    /// The scene as an image; `supersample` > 1 averages that many samples per axis (anti-aliased edges), 1 gives
    /// hard edges as an aliased renderer (PIL's ImageDraw) draws them.
    public func render(supersample: Int = 1) -> RGBImage {
        precondition(supersample >= 1)
        var px = [UInt8](repeating: 0, count: side * side * 3)
        let s = supersample, inv = 1.0 / Double(s * s)
        for y in 0..<side {
            for x in 0..<side {
                var acc = [0.0, 0.0, 0.0]
                for sy in 0..<s {
                    for sx in 0..<s {
                        let fx = Double(x) + (Double(sx) + 0.5) / Double(s), fy = Double(y) + (Double(sy) + 0.5) / Double(s)
                        let c = items.first { $0.contains(fx, fy) }?.rgb ?? background
                        acc[0] += Double(c[0]); acc[1] += Double(c[1]); acc[2] += Double(c[2])
                    }
                }
                let i = (y * side + x) * 3
                for c in 0..<3 { px[i + c] = UInt8(min(255, (acc[c] * inv).rounded())) }
            }
        }
        return RGBImage(width: side, height: side, pixels: px)
    }

    /// The empty canvas of the same size and background (the evaluation's control image).
    public func blank() -> RGBImage {
        RGBImage(width: side, height: side, pixels: [UInt8]((0..<side * side).flatMap { _ in background }))
    }

    /// A caption naming the count and every shape, left to right ("Two shapes: a red circle and a blue square.").
    public func caption() -> String {
        let names = items.map { "a \($0.color.rawValue) \($0.kind.rawValue)" }
        let list = names.count == 1 ? names[0] : names.dropLast().joined(separator: ", ") + " and " + names.last!
        let count = ["One shape", "Two shapes", "Three shapes"][items.count - 1]
        return "\(count): \(list)."
    }

    /// Every question of `kind` this scene can answer, with its answer. For `exists`, all twelve combinations.
    public func questions(_ kind: ShapeQuestionKind) -> [(question: String, answer: String)] {
        func cap(_ s: String) -> String { s.prefix(1).uppercased() + s.dropFirst() + "." }
        switch kind {
        case .color:
            return ShapeKind.allCases.compactMap { k in
                let m = items.filter { $0.kind == k }
                return m.count == 1 ? ("What color is the \(k.rawValue)?", cap(m[0].color.rawValue)) : nil
            }
        case .shape:
            return ShapeColor.allCases.compactMap { c in
                let m = items.filter { $0.color == c }
                return m.count == 1 ? ("What shape is the \(c.rawValue) object?", cap(m[0].kind.rawValue)) : nil
            }
        case .count:
            return [("How many shapes are there?", cap(["one", "two", "three"][items.count - 1]))]
        case .exists:
            return ShapeColor.allCases.flatMap { c in
                ShapeKind.allCases.map { k in
                    ("Is there a \(c.rawValue) \(k.rawValue)?", items.contains { $0.kind == k && $0.color == c } ? "Yes." : "No.")
                }
            }
        }
    }

    /// One question of `kind` drawn at random, or nil when the scene has none. `exists` questions are Yes half the
    /// time; half of the No ones share the colour or the shape of a shape present, so the answer needs binding.
    public func randomQuestion(_ kind: ShapeQuestionKind, rng: inout TrainingRNG) -> (question: String, answer: String)? {
        let all = questions(kind)
        guard !all.isEmpty else { return nil }
        guard kind == .exists else { return all[rng.below(all.count)] }
        let yes = all.filter { $0.answer == "Yes." }, no = all.filter { $0.answer == "No." }
        if rng.below(2) == 0 { return yes[rng.below(yes.count)] }
        let near = no.filter { q in items.contains { q.question.contains(" \($0.color.rawValue) ") || q.question.hasSuffix(" \($0.kind.rawValue)?") } }
        let pool = rng.below(2) == 0 && !near.isEmpty ? near : no
        return pool[rng.below(pool.count)]
    }
}

/// Writes a shapes-world data set: `images/NNNNN.png` (and `blank/NNNNN.png`, the same canvases empty),
/// `captions.tsv` (`url`, `caption`: the caption data), `questions.json` (image conversations with `kind` and
/// `answer` fields, `questionsPerImage` per image, kinds in turn), and `scenes.jsonl` (what each image holds).
public struct ShapesWorldWriter {
    /// Images to render.
    public var images: Int
    /// Seed of everything drawn.
    public var seed: UInt64
    /// Questions per image.
    public var questionsPerImage = 2
    /// Also write the empty canvases (evaluation controls).
    public var blanks = false

    /// A writer of `images` scenes from `seed`.
    public init(images: Int, seed: UInt64) {
        self.images = images
        self.seed = seed
    }

    /// Renders and writes everything under `dir` (created if needed); returns the number of questions written.
    @discardableResult
    public func write(to dir: String, pool: ThreadPool = .shared) throws -> Int {
        guard images > 0, images <= 1_000_000 else { throw AdapterError.invalidArgument("--images must be between 1 and 1000000") }
        guard questionsPerImage >= 0, questionsPerImage <= 16 else { throw AdapterError.invalidArgument("--questions-per-image must be between 0 and 16") }
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/images", withIntermediateDirectories: true)
        if blanks { try fm.createDirectory(atPath: dir + "/blank", withIntermediateDirectories: true) }
        var rng = TrainingRNG(seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ 1)
        var scenes: [ShapesScene] = []
        var supersample: [Int] = []
        for _ in 0..<images {
            scenes.append(ShapesScene.random(rng: &rng))
            // Half the images anti-aliased, half with hard edges: renderers differ, the answers must not.
            supersample.append(rng.below(2) == 0 ? 1 : 4)
        }
        let errors = Mutex<[String]>([])
        pool.parallelFor(images) { range in
            for i in range {
                do {
                    let name = String(format: "%05d.png", i)
                    try scenes[i].render(supersample: supersample[i]).writePNG(to: dir + "/images/" + name)
                    if blanks { try scenes[i].blank().writePNG(to: dir + "/blank/" + name) }
                } catch {
                    errors.withLock { $0.append("\(error)") }
                }
            }
        }
        if let e = errors.withLock({ $0.first }) { throw AdapterError.io(e) }
        var tsv = "url\tcaption\n"
        var records: [[String: Any]] = []
        var lines: [String] = []
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var turn = 0
        for (i, scene) in scenes.enumerated() {
            let name = String(format: "%05d.png", i)
            tsv += "images/\(name)\t\(scene.caption())\n"
            lines.append(String(decoding: try encoder.encode(scene), as: UTF8.self))
            var asked = Set<String>()
            var tries = 0
            while asked.count < questionsPerImage, tries < 8 * max(questionsPerImage, 1) {
                tries += 1
                let kind = ShapeQuestionKind.allCases[turn % 4]
                turn += 1
                guard let (q, a) = scene.randomQuestion(kind, rng: &rng), asked.insert(q).inserted else { continue }
                var r: [String: Any] = [
                    "image": "images/\(name)", "kind": kind.rawValue, "answer": a,
                    "conversations": [["from": "human", "value": q], ["from": "gpt", "value": a]],
                ]
                if blanks { r["blank"] = "blank/\(name)" }
                records.append(r)
            }
        }
        try AtomicFile.write(Array(tsv.utf8), to: dir + "/captions.tsv")
        try AtomicFile.write(Array(try JSONSerialization.data(withJSONObject: records, options: [.prettyPrinted, .sortedKeys])), to: dir + "/questions.json")
        try AtomicFile.write(Array((lines.joined(separator: "\n") + "\n").utf8), to: dir + "/scenes.jsonl")
        return records.count
    }
}
