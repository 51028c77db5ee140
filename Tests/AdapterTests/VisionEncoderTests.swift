import LlamaAdapter
import Foundation
import XCTest

/// The vision-encoder seam against transformers 4.46.3 (tools/reference/make_vision_encoders.py): tiny random
/// `Dinov2Model`, `SiglipVisionModel` and `CLIPVisionModel` folders, their slow image processors' pixel tensors
/// and their `last_hidden_state` on a square, a wide and a tall image.
final class VisionEncoderTests: XCTestCase {
    static let images = ["square", "wide", "tall"]

    static func npy(_ relative: String) throws -> (shape: [Int], values: [Float]) {
        let c = try NPY.read(path: Fixtures.path("vision/" + relative))
        return (c.shape, try c.floats())
    }

    static func maxAbs(_ a: Tensor, _ b: [Float]) -> Float {
        zip(UnsafeBufferPointer(start: a.floats, count: a.count), b).map { abs($0 - $1) }.max() ?? .infinity
    }

    /// Each folder's processor gives transformers' pixel tensor (within 1e-6; the arithmetic is the same, so in
    /// practice bit for bit), including DINOv2's zero-padded crop of images narrower than the crop.
    func testImageProcessorsMatchTransformers() throws {
        for model in ["dinov2_tiny", "siglip_tiny", "clip_hf_tiny"] {
            let encoder = try loadVisionEncoder(path: Fixtures.path("vision/" + model))
            XCTAssertEqual(encoder.defaultChannels, model == "clip_hf_tiny" ? .bgr : .rgb)
            for name in Self.images {
                let image = try ImageDecoder.decode(path: Fixtures.path("vision/\(name).png"))
                let ours = try encoder.preprocess(image, channels: .rgb)
                let ref = try Self.npy("\(model)/pixels_\(name).npy")
                XCTAssertEqual(ours.shape, ref.shape, "\(model) \(name)")
                guard ours.shape == ref.shape else { continue }
                XCTAssertLessThanOrEqual(Self.maxAbs(ours, ref.values), 1e-6, "\(model) \(name)")
            }
        }
    }

    /// `last_hidden_state` (DINOv2, SigLIP) and the official ln_post-on-every-token features (CLIP) from the
    /// reference pixels, within 1e-4.
    func testEncodersMatchTransformers() throws {
        for (model, stem) in [("dinov2_tiny", "hidden"), ("siglip_tiny", "hidden"), ("clip_hf_tiny", "features")] {
            let encoder = try loadVisionEncoder(path: Fixtures.path("vision/" + model))
            for name in Self.images {
                let px = try Self.npy("\(model)/pixels_\(name).npy")
                let feats = try encoder.encode(Tensor(px.values, shape: px.shape), pool: .shared)
                let ref = try Self.npy("\(model)/\(stem)_\(name).npy")
                XCTAssertEqual(feats.shape, ref.shape, "\(model) \(name)")
                guard feats.shape == ref.shape else { continue }
                XCTAssertLessThanOrEqual(Self.maxAbs(feats, ref.values), 1e-4, "\(model) \(name)")
            }
        }
    }

    /// The families are told apart by config.json, and the encoders report their geometry.
    func testEncodersAreRecognisedByContent() throws {
        let d = try loadVisionEncoder(path: Fixtures.path("vision/dinov2_tiny"))
        XCTAssertEqual(d.family, .dinov2)
        XCTAssertEqual(d.patchSize, 14)
        XCTAssertEqual(d.outputDim, 32)
        let s = try loadVisionEncoder(path: Fixtures.path("vision/siglip_tiny"))
        XCTAssertEqual(s.family, .siglip)
        XCTAssertEqual(s.patchSize, 8)
        let c = try loadVisionEncoder(path: Fixtures.path("vision/clip_hf_tiny"))
        XCTAssertEqual(c.family, .clip)
        XCTAssertEqual(c.patchSize, 7)
        let official = try loadVisionEncoder(path: Fixtures.path("tiny_adapter/clip_tiny.pt"))
        XCTAssertEqual(official.family, .clip)
        XCTAssertEqual(official.preprocessor, .officialCLIP(size: 224, channels: .bgr))
    }

    /// DINOv2's position table resized to a 3x4 grid equals PyTorch's bicubic `interpolate` (what transformers adds
    /// for a 42x56 input): checked through the encoder's embedding of a zero image with the blocks removed would
    /// need internals, so the resize is checked on the table itself.
    func testDinov2PositionInterpolationMatchesPyTorch() throws {
        let folder = try SafetensorsFolder(path: Fixtures.path("vision/dinov2_tiny"))
        let table = try folder.tensor("embeddings.position_embeddings").toF32()  // [1, 17, 32]
        let resized = try visionPositionTable(table: try table.reshaped([17, 32]), storedGrid: (4, 4), hasClass: true, toGrid: (3, 4))
        let ref = try Self.npy("dinov2_tiny/pos_embed_interpolated.npy")
        XCTAssertEqual(resized.shape, ref.shape)
        XCTAssertLessThanOrEqual(Self.maxAbs(resized, ref.values), 1e-5)
    }

    /// The official CLIP path is untouched: the seam's transform of a CLIP .pt is the official torchvision one, bit
    /// for bit, and its features are `clipEncodeImage`'s.
    func testOfficialCLIPThroughTheSeamIsUnchanged() throws {
        let path = Fixtures.path("tiny_adapter/clip_tiny.pt")
        let encoder = try loadVisionEncoder(path: path)
        let image = try ImageDecoder.decode(path: Fixtures.path("tiny_adapter/image.png"))
        let viaSeam = try encoder.preprocess(image)
        let official = try preprocessImage(image, channels: .bgr, size: 224)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: viaSeam.floats, count: viaSeam.count)),
                       Array(UnsafeBufferPointer(start: official.floats, count: official.count)))
        let a = try encoder.encode(viaSeam, pool: .shared)
        let b = try clipEncodeImage(try CLIPVisionWeights.load(path: path), image: official)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: a.floats, count: a.count)), Array(UnsafeBufferPointer(start: b.floats, count: b.count)))
    }

    /// The real DINOv2-S/14 folder (scripts/fetch-dinov2.sh) gives transformers' `last_hidden_state` on two committed
    /// pictures through its own preprocessor_config.json (shortest edge 256, crop 224): the first tokens value by
    /// value and every token's L2 norm (tools/reference/check_dinov2_onnx.py).
    func testRealDinov2MatchesTransformers() throws {
        let folder = try Fixtures.dinov2()
        struct Ref: Decodable {
            struct Image: Decodable { let picture: String; let shape: [Int]; let token_l2: [Double] }
            let images: [String: Image]
        }
        let ref = try JSONDecoder().decode(Ref.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.path("vision/dinov2_small_ref/reference.json"))))
        let encoder = try loadVisionEncoder(path: folder)
        XCTAssertEqual(encoder.family, .dinov2)
        for (name, image) in ref.images.sorted(by: { $0.key < $1.key }) {
            let feats = try encoder.encode(image: try ImageDecoder.decode(path: Fixtures.path(String(image.picture.dropFirst("Tests/Fixtures/".count)))))
            XCTAssertEqual(feats.shape, Array(image.shape.dropFirst()), name)
            let head = try Self.npy("dinov2_small_ref/hidden_\(name).npy")
            let scale = head.values.map { abs($0) }.max() ?? 1
            XCTAssertLessThanOrEqual(Self.maxAbs(feats, head.values) / scale, 1e-4, name)
            for t in 0..<feats.shape[0] {
                let row = UnsafeBufferPointer(start: feats.floats + t * feats.shape[1], count: feats.shape[1])
                let l2 = row.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
                XCTAssertEqual(l2, image.token_l2[t], accuracy: 1e-4 * image.token_l2[t], "\(name) token \(t)")
            }
        }
    }

    /// Bad folders get one-line errors naming the problem.
    func testUnsupportedModelTypeAndMissingTensorsAreErrors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vision-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let src = Fixtures.path("vision/dinov2_tiny")
        try FileManager.default.copyItem(atPath: src + "/model.safetensors", toPath: dir.path + "/model.safetensors")
        try #"{"model_type": "vit", "hidden_size": 32}"#.write(toFile: dir.path + "/config.json", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try loadVisionEncoder(path: dir.path)) { XCTAssertTrue("\($0)".contains("model_type 'vit'"), "\($0)") }
        try #"{"model_type": "siglip", "num_attention_heads": 4}"#.write(toFile: dir.path + "/config.json", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try loadVisionEncoder(path: dir.path)) { XCTAssertTrue("\($0)".contains("missing SigLIP tensor"), "\($0)") }
        try #"{"model_type": "dinov2", "num_attention_heads": 4, "use_swiglu_ffn": true}"#.write(toFile: dir.path + "/config.json", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try loadVisionEncoder(path: dir.path)) { XCTAssertTrue("\($0)".contains("use_swiglu_ffn"), "\($0)") }
    }
}
