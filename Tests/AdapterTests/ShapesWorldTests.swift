import LlamaAdapter
import Foundation
import XCTest

/// The shapes world's generator keeps its promises (issue: the visual model, item 6): canvas and shape sizes,
/// no overlap, no repeated (shape, colour), the colours in their ranges, answers that follow from the scene.
final class ShapesWorldTests: XCTestCase {
    func testScenesKeepTheirPromises() {
        var rng = TrainingRNG(seed: 7)
        var counts = [0, 0, 0]
        for _ in 0..<400 {
            let s = ShapesScene.random(rng: &rng)
            XCTAssert((160...448).contains(s.side))
            XCTAssert(s.background.allSatisfy { $0 >= 215 })
            XCTAssert((1...3).contains(s.items.count))
            counts[s.items.count - 1] += 1
            XCTAssertEqual(Set(s.items.map { "\($0.kind)\($0.color)" }).count, s.items.count, "a repeated shape and colour")
            for (i, a) in s.items.enumerated() {
                XCTAssert(a.size >= 0.18 * Double(s.side) && a.size <= 0.40 * Double(s.side))
                XCTAssert(a.cx - a.size / 2 >= 0 && a.cx + a.size / 2 <= Double(s.side) && a.cy - a.size / 2 >= 0 && a.cy + a.size / 2 <= Double(s.side))
                for b in s.items[(i + 1)...] {
                    let apart = abs(a.cx - b.cx) >= (a.size + b.size) / 2 || abs(a.cy - b.cy) >= (a.size + b.size) / 2
                    XCTAssert(apart, "overlapping shapes")
                }
            }
        }
        XCTAssert(counts.allSatisfy { $0 > 80 }, "counts \(counts)")
    }

    /// Rendered pixels: the background where no shape is, each shape's colour at its centre, and nothing else in
    /// an aliased render; the answers are those of the scene.
    func testRenderAndAnswers() throws {
        let scene = ShapesScene(side: 200, background: [240, 240, 230], items: [
            ShapeItem(kind: .circle, color: .red, rgb: [220, 30, 30], cx: 50, cy: 60, size: 60),
            ShapeItem(kind: .triangle, color: .blue, rgb: [20, 60, 220], cx: 140, cy: 140, size: 70),
        ])
        let image = scene.render(supersample: 1)
        XCTAssertTrue(image[50, 60] == (220, 30, 30))
        XCTAssertTrue(image[140, 150] == (20, 60, 220))
        XCTAssertTrue(image[140, 103] == (240, 240, 230), "above the triangle's apex")
        XCTAssertTrue(image[110, 170] == (20, 60, 220), "inside the base of the triangle")
        XCTAssertTrue(image[5, 195] == (240, 240, 230))
        XCTAssertEqual(scene.caption(), "Two shapes: a red circle and a blue triangle.")
        XCTAssertEqual(scene.questions(.color).map(\.answer), ["Red.", "Blue."])
        XCTAssertEqual(scene.questions(.color).map(\.question), ["What color is the circle?", "What color is the triangle?"])
        XCTAssertEqual(scene.questions(.shape).map(\.answer), ["Circle.", "Triangle."])
        XCTAssertEqual(scene.questions(.count).map(\.answer), ["Two."])
        let yes = scene.questions(.exists).filter { $0.answer == "Yes." }.map(\.question)
        XCTAssertEqual(Set(yes), ["Is there a red circle?", "Is there a blue triangle?"])
        var rng = TrainingRNG(seed: 1)
        var answers: [String: Int] = [:]
        for _ in 0..<400 { answers[scene.randomQuestion(.exists, rng: &rng)!.answer, default: 0] += 1 }
        XCTAssert(abs(answers["Yes."]! - 200) < 40, "exists questions are balanced: \(answers)")
    }

    /// The writer's files: PNGs that decode to the rendered scenes, captions.tsv and questions.json that the
    /// training loader reads, and the blank controls.
    func testWriterOutputIsReadableTrainingData() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("shapes-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var w = ShapesWorldWriter(images: 6, seed: 3)
        w.blanks = true
        let n = try w.write(to: dir)
        XCTAssertEqual(n, 12)
        let captions = try TrainingDataset.load(path: dir + "/captions.tsv")
        XCTAssertEqual(captions.samples.count, 6)
        let questions = try TrainingDataset.load(path: dir + "/questions.json")
        XCTAssertEqual(questions.samples.count, 12)
        let image = try ImageDecoder.decode(path: dir + "/images/00000.png")
        let blank = try ImageDecoder.decode(path: dir + "/blank/00000.png")
        XCTAssertEqual(image.width, blank.width)
        XCTAssertEqual(Set(stride(from: 0, to: blank.pixels.count, by: 3).map { blank.pixels[$0] }).count, 1, "one background colour")
        let again = FileManager.default.temporaryDirectory.appendingPathComponent("shapes-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: again) }
        try ShapesWorldWriter(images: 6, seed: 3).write(to: again)
        XCTAssertEqual(try String(contentsOfFile: dir + "/captions.tsv", encoding: .utf8), try String(contentsOfFile: again + "/captions.tsv", encoding: .utf8))
    }
}
