import LlamaAdapter
import Foundation
import XCTest

/// Data sets and tokenisation as the official FinetuneDataset / PretrainDataset build them.
final class TrainingDataTests: XCTestCase {
    func testPythonTupleReprOfTextOnlyInstructions() {
        // str(('...',)) as the official dataset's trailing comma produces it.
        XCTAssertEqual(pythonTupleRepr("Name a colour."), "('Name a colour.',)")
        XCTAssertEqual(pythonTupleRepr("It's fine"), "(\"It's fine\",)")
        XCTAssertEqual(pythonTupleRepr("both ' and \""), "('both \\' and \"',)")
        XCTAssertEqual(pythonTupleRepr("line\nbreak\ttab\\"), "('line\\nbreak\\ttab\\\\',)")
        XCTAssertEqual(pythonTupleRepr("é✓"), "('é✓',)")
        XCTAssertEqual(pythonTupleRepr("\u{7}"), "('\\x07',)")
    }

    func testOfficialTextFormattingOnlyUnderCompatOfficial() {
        let s = TrainingSample.instruction(instruction: "Say hi.", input: "", output: "Hi.")
        XCTAssertTrue(formatTrainingText(s, compat: .standard).prompt.contains("### Instruction:\nSay hi.\n\n### Input:\n\n\n### Response:"))
        XCTAssertTrue(formatTrainingText(s, compat: .official).prompt.contains("### Instruction:\n('Say hi.',)\n\n### Input:"))
        let noInput = TrainingSample.instruction(instruction: "Say hi.", input: nil, output: "Hi.")
        XCTAssertFalse(formatTrainingText(noInput, compat: .standard).prompt.contains("### Input:"))
        let caption = TrainingSample.caption(path: "x.png", caption: "A cat.")
        XCTAssertTrue(formatTrainingText(caption, compat: .standard).prompt.contains("Generate caption of this image"))
    }

    func testTokenizationMasksThePromptPadsAndTruncatesLikeTheOfficialDataset() throws {
        // The reference script's own tokenisation (tools/reference/make_training_reference.py) gave these losses;
        // here the rules themselves: prompt labels 0, EOS appended, padding 0, truncation at max_words.
        let tok = try SentencePieceTokenizer(path: Fixtures.path("tiny_llama/tokenizer.model"))
        let s = TrainingSample.instruction(instruction: "Say hi.", input: nil, output: "Hello world.")
        let (prompt, answer) = formatTrainingText(s, compat: .standard)
        let p = tok.encode(prompt, addBos: true, addEos: false)
        let full = tok.encode(prompt + answer, addBos: true, addEos: true)
        let t = tokenizeSample(s, tokenizer: tok, maxWords: full.count + 5, compat: .standard)
        XCTAssertEqual(Array(t.tokens.prefix(full.count)), full)
        XCTAssertEqual(Array(t.tokens.suffix(5)), [0, 0, 0, 0, 0])
        XCTAssertEqual(t.length, full.count)
        XCTAssertEqual(Array(t.labels.prefix(p.count)), [Int](repeating: 0, count: p.count))
        XCTAssertEqual(Array(t.labels[p.count..<full.count]), Array(full[p.count...]))
        XCTAssertEqual(t.labels.last, 0)
        let cut = tokenizeSample(s, tokenizer: tok, maxWords: p.count + 2, compat: .standard)
        XCTAssertEqual(cut.tokens, Array(full.prefix(p.count + 2)))
        XCTAssertEqual(cut.length, p.count + 2)
    }

    func testMalformedRecordsNameTheFileAndRecord() throws {
        let dir = try makeTemporaryDirectory()
        func load(_ text: String, _ name: String = "d.json") throws -> TrainingDataset {
            let path = dir.appendingPathComponent(name).path
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return try TrainingDataset.load(path: path)
        }
        assertThrows(try load(#"[{"instruction": "a", "output": "b"}, {"instruction": "a"}]"#), contains: ["d.json", "record 2", "output"])
        assertThrows(try load(#"[{"image": "https://x/y.png", "conversations": []}]"#), contains: ["record 1", "URL"])
        assertThrows(try load(#"[{"image": "y.png", "conversations": [{"value": "q"}]}]"#), contains: ["record 1", "conversations"])
        assertThrows(try load(#"[{"instruction": 3, "output": "b"}"#), contains: ["d.json", "JSON"])
        assertThrows(try load("url\tcaption\na.png\n", "c.tsv"), contains: ["c.tsv", "record 1", "fields"])
        assertThrows(try load("name\ttext\na.png\tb\n", "c.tsv"), contains: ["url", "caption"])
        assertThrows(try load("[]"), contains: ["no training records"])
        let ok = try load("url\tcaption\nimg/a.png\tA dog.\n", "c.tsv")
        XCTAssertEqual(ok.samples, [.caption(path: dir.appendingPathComponent("img/a.png").path, caption: "A dog.")])
        let jsonl = try load("{\"instruction\": \"a\", \"input\": \"\", \"output\": \"b\"}\n\n{\"instruction\": \"c\", \"output\": \"d\"}\n", "d.jsonl")
        XCTAssertEqual(jsonl.samples, [.instruction(instruction: "a", input: "", output: "b"), .instruction(instruction: "c", input: nil, output: "d")])
    }

    func testRandomResizedCropKeepsMostOfTheImageAndIsSeeded() {
        // Square: crops of area 0.9-1 with aspect 3/4-4/3 fit. (A 3:2 image never fits and always takes
        // torchvision's centre fallback.)
        let img = RGBImage(width: 256, height: 256, pixels: (0..<(256 * 256 * 3)).map { UInt8($0 % 251) })
        var a = TrainingRNG(seed: 1), b = TrainingRNG(seed: 1), c = TrainingRNG(seed: 2)
        let x = randomResizedCrop(img, size: 224, rng: &a), y = randomResizedCrop(img, size: 224, rng: &b)
        let z = randomResizedCrop(img, size: 224, rng: &c)
        XCTAssertTrue(x == y, "same seed, same crop")
        XCTAssertTrue(x != z, "another seed, another crop")
        XCTAssertEqual([x.width, x.height], [224, 224])
    }

    func testTheREADMELibraryTrainingExampleRunsAndLowersTheLoss() throws {
        // The README's snippet, on the tiny model and a tiny text data set.
        let dir = try makeTemporaryDirectory()
        let data = dir.appendingPathComponent("d.json").path
        try JSONSerialization.data(withJSONObject: (0..<4).map { ["instruction": "Say \($0).", "output": "Arr! \($0), matey!"] })
            .write(to: URL(fileURLWithPath: data))
        let c = try ModelContainer.load(ModelConfiguration(model: Fixtures.path("tiny_llama/model"), tokenizer: Fixtures.path("tiny_llama/tokenizer.model")))
        var spec = AdapterSpec(); spec.bias = true
        let store = try ParameterStore.fresh(spec, model: c.model, clipDim: nil, seed: 0)
        var o = TrainingOptions(); o.steps = 12; o.batchSize = 4; o.maxWords = 160; o.lr = 2e-2; o.shuffle = false
        let trainer = try Trainer(base: c.model, store: store, tokenizer: c.tokenizer, clip: nil,
                                  data: try TrainingDataset.load(path: data), captionData: nil, options: o)
        var losses: [Double] = []
        while trainer.step < o.steps { losses.append(try trainer.trainStep().loss) }
        XCTAssertLessThan(losses.last!, 0.7 * losses.first!, "\(losses)")
        let out = dir.appendingPathComponent("a.pth").path
        try store.write(to: out, format: .pytorch)
        XCTAssertNoThrow(try AdapterWeights.load(path: out, model: c.model.config))
    }
}
