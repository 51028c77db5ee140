import LlamaAdapter
import Foundation
import XCTest

/// Experts (paper section 4.4): Tesseract OCR on images rendered by tools/reference/make_ocr_images.py, and
/// their text given to the model as context.
final class ExpertTests: XCTestCase {
    static let expected: [String: [String]] = {
        let data = try! Data(contentsOf: Fixtures.root.appendingPathComponent("ocr/expected.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: [String]]
    }()

    static func words(_ s: String) -> [String] { s.split(whereSeparator: { $0.isWhitespace }).map(String.init) }

    func testOCRReadsTheRenderedTextInReadingOrder() throws {
        let ocr = try OCRExpert()
        for (file, lines) in Self.expected {
            let text = try ocr.recognize(path: Fixtures.path("ocr/" + file))
            // Every drawn line, in order, word for word (spacing inside a line may differ: prices are right-aligned).
            let got = text.split(separator: "\n").map { Self.words(String($0)) }.filter { !$0.isEmpty }
            XCTAssertEqual(got, lines.map(Self.words), file)
        }
    }

    func testContextGoesIntoTheAlpacaInputField() {
        let (p, i) = promptWithContext("What is the total?", context: "TOTAL 14.40", template: .alpaca, input: nil)
        XCTAssertEqual(PromptTemplate.alpaca(p, input: i), PromptTemplate.alpaca("What is the total?", input: "TOTAL 14.40"))
        XCTAssertEqual(promptWithContext("Q", context: "C", template: .alpaca, input: "mine").input, "mine\n\nC")
        XCTAssertEqual(promptWithContext("Q", context: "C", template: .chat, input: nil).prompt, "Context:\nC\n\nQ")
        XCTAssertEqual(expertContext([(.ocr, "a"), (.caption, "b")]), "Text in the image:\na\n\nCaption of the image:\nb")
    }

    /// The other layouts put the context around the question in the user's text, whatever the template.
    func testContextLayouts() {
        XCTAssertEqual(promptWithContext("Q", context: "C", template: .alpaca, input: nil, layout: .before).prompt, "Context:\nC\n\nQ")
        XCTAssertNil(promptWithContext("Q", context: "C", template: .alpaca, input: nil, layout: .before).input)
        XCTAssertEqual(promptWithContext("Q", context: "C", template: .chat, input: nil, layout: .document).prompt, "Document:\n\"\"\"\nC\n\"\"\"\n\nQ")
        XCTAssertTrue(promptWithContext("Q", context: "C", template: .chat, input: nil, layout: .after).prompt.hasPrefix("Q\n\n"))
    }

    func testSmolLM2AnswersFromAReceiptThroughTheOCRExpert() throws {
        let model = try Fixtures.smolLM2()
        let r = try CLIRunner.run(["generate", "--model", model, "--image", Fixtures.path("ocr/receipt.png"), "--expert", "ocr",
                                   "--prompt", "What is the total on this receipt?", "--temperature", "0", "--max-new-tokens", "24", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let out = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        XCTAssertTrue((out["expert_context"] as! String).contains("TOTAL 14.40"))
        XCTAssertTrue((out["text"] as! String).contains("14.40"), out["text"] as! String)
    }

    func testCaptionExpertUsesTheVisualAdapterAndRefusesWithoutOne() throws {
        let tiny = ["--model", Fixtures.path("tiny_llama/model"), "--tokenizer", Fixtures.path("tiny_llama/tokenizer.model")]
        let image = Fixtures.path("tiny_adapter/image.png")
        let r = try CLIRunner.run(["generate"] + tiny + ["--adapter", Fixtures.path("tiny_adapter/adapter_bias.pth"),
                                   "--clip", Fixtures.path("tiny_adapter/clip_tiny.pth"), "--image", image, "--expert", "caption",
                                   "--prompt", "Describe it.", "--temperature", "0", "--max-new-tokens", "4", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let out = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        // The caption is the model's own greedy answer to the official caption instruction on this image.
        let c = try ModelContainer.load(ModelConfiguration(model: Fixtures.path("tiny_llama/model"), tokenizer: Fixtures.path("tiny_llama/tokenizer.model"),
                                                           adapter: Fixtures.path("tiny_adapter/adapter_bias.pth"),
                                                           clip: Fixtures.path("tiny_adapter/clip_tiny.pth")))
        let s = try c.makeSession(image: try c.encodeImage(path: image))
        let caption = try s.generate(prompt: c.tokenizer.encodePrompt(PromptTemplate.alpaca("Generate caption of this image")),
                                     maxNewTokens: 64, sampling: .greedy).text.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(out["expert_context"] as? String, caption)
        let bad = try CLIRunner.run(["generate"] + tiny + ["--image", image, "--expert", "caption", "--prompt", "x"])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.hasPrefix("error: ") && bad.stderr.contains("visual branch"), bad.stderr)
        let noImage = try CLIRunner.run(["generate"] + tiny + ["--expert", "ocr", "--prompt", "x"])
        XCTAssertEqual(noImage.status, 1)
        XCTAssertTrue(noImage.stderr.contains("--expert needs --image"), noImage.stderr)
    }
}
