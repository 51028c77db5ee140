import LlamaAdapter
import CKernels
import Foundation
import XCTest

/// The C K-quant kernels (Q4_K, Q5_K, Q6_K) against the scalar Swift reference `dequantize`, which follows
/// ggml's `dequantize_row_q*_K` operation for operation. Every SIMD level the CPU has is checked (the kernels
/// are capped to the portable, AVX2 and AVX-512 versions in turn).
final class KQuantKernelTests: XCTestCase {
    static let kTypes: [DType] = [.q4_K, .q5_K, .q6_K]

    struct LCG {
        var s: UInt64
        mutating func next() -> UInt64 { s = s &* 6364136223846793005 &+ 1442695040888963407; return s >> 33 }
        mutating func unit() -> Float { Float(next() % 1_000_000) / 1_000_000 }
        /// A signed float spanning half-float subnormals to ~10, sometimes exactly zero.
        mutating func scale() -> Float {
            if next() % 16 == 0 { return 0 }
            let magnitude = Float(pow(10.0, Double(unit()) * 7 - 6))
            return next() % 2 == 0 ? magnitude : -magnitude
        }
    }

    /// Runs `body` once per SIMD level this CPU supports (0 portable, 1 AVX2, 2 AVX-512), then restores the default.
    func forEachLevel(_ body: (Int) throws -> Void) rethrows {
        defer { _ = ck_quant_k_set_level(-1) }
        for level in 0...2 where Int(ck_quant_k_set_level(Int32(level))) == level {
            try body(level)
        }
    }

    /// `blocks` random valid blocks of `dtype`: random quant, scale and high-bit bytes, f16 super-block scales
    /// made from random floats (so they are finite, including subnormal halves and zero).
    func randomBlocks(_ dtype: DType, blocks: Int, rng: inout LCG) -> [UInt8] {
        var bytes = (0..<(blocks * dtype.blockBytes)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        func putHalf(_ at: Int, _ v: Float) {
            let h = ggmlFloatToHalf(v)
            bytes[at] = UInt8(h & 0xff)
            bytes[at + 1] = UInt8(h >> 8)
        }
        for b in 0..<blocks {
            let base = b * dtype.blockBytes
            switch dtype {
            case .q4_K, .q5_K:
                putHalf(base, rng.scale())      // d
                putHalf(base + 2, rng.scale())  // dmin
            case .q6_K:
                putHalf(base + 208, rng.scale())  // d is the last field
            default:
                fatalError("not a K-quant: \(dtype)")
            }
        }
        return bytes
    }

    func tensor(_ bytes: [UInt8], _ dtype: DType, rows: Int, k: Int) throws -> Tensor {
        let storage = Storage(zeroedBytes: bytes.count)
        bytes.withUnsafeBytes { storage.base.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        return try Tensor(shape: [rows, k], dtype: dtype, storage: storage)
    }

    /// The Swift reference values of `count` elements at `src`.
    func reference(_ dtype: DType, _ src: UnsafeRawPointer, count: Int) -> [Float] {
        var out = [Float](repeating: .nan, count: count)
        out.withUnsafeMutableBufferPointer { dequantize(dtype: dtype, src: src, dst: $0.baseAddress!, count: count) }
        return out
    }

    // MARK: - Dequantization

    func testDequantizeIsBitIdenticalToSwiftReference() throws {
        for dtype in Self.kTypes {
            var rng = LCG(s: 17)
            let blocks = 300
            let bytes = randomBlocks(dtype, blocks: blocks, rng: &rng)
            let want = bytes.withUnsafeBytes { reference(dtype, $0.baseAddress!, count: blocks * 256) }
            XCTAssertFalse(want.contains { !$0.isFinite }, "\(dtype): finite scales give finite values")
            try forEachLevel { level in
                var got = [Float](repeating: .nan, count: blocks * 256)
                bytes.withUnsafeBytes { src in got.withUnsafeMutableBufferPointer {
                    convertToFloat(dtype: dtype, src: src.baseAddress!, dst: $0.baseAddress!, count: blocks * 256)
                } }
                let mismatch = got.indices.first { got[$0].bitPattern != want[$0].bitPattern }
                XCTAssertNil(mismatch, "\(dtype) level \(level): element \(mismatch ?? 0) is \(got[mismatch ?? 0]), reference \(want[mismatch ?? 0])")
                // A single block through the public tensor path too.
                let t = try tensor(Array(bytes[0..<dtype.blockBytes]), dtype, rows: 1, k: 256)
                XCTAssertEqual(t.toFloatArray().map(\.bitPattern), Array(want[0..<256]).map(\.bitPattern), "\(dtype) level \(level)")
            }
        }
    }

    struct FixtureTensor: Decodable {
        let name: String
        let type: String
        let shape: [Int]
        let values: [Double]
    }

    struct FixtureFile: Decodable {
        let tensors: [FixtureTensor]
    }

    /// gguf-py's dequantized values of the Q4_K/Q5_K/Q6_K tensors in the tiny GGUF fixture.
    func testDequantizeMatchesGGUFFixture() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("gguf/expected.json")))
        let expected = try JSONDecoder().decode(FixtureFile.self, from: data).tensors
            .filter { Self.kTypes.map(\.rawValue).contains($0.type) }
        XCTAssertEqual(Set(expected.map(\.type)), Set(Self.kTypes.map(\.rawValue)), "fixture covers every K-quant")
        let g = try GGUFFile(path: Fixtures.path("gguf/tiny.gguf.bin"))
        try forEachLevel { level in
            for e in expected {
                let t = try g.tensor(e.name)
                XCTAssertEqual(t.dtype.rawValue, e.type, e.name)
                XCTAssertEqual(t.shape, e.shape, e.name)
                let want = e.values.map { Float($0) }
                XCTAssertEqual(t.toFloatArray().map(\.bitPattern), want.map(\.bitPattern), "\(e.name) level \(level)")
                XCTAssertEqual(reference(t.dtype, t.data, count: t.count).map(\.bitPattern), want.map(\.bitPattern), "\(e.name): Swift reference")
            }
        }
    }

    // MARK: - Linear

    /// out = inp · Wᵀ through `linearForward` (T = 1: the C mat-vec; T = 5: dequantized tiles and GEMM) against a
    /// double-precision dot of the reference values. The bound is relative to |ref| plus a small share of
    /// Σ|w·x|, the scale of any f32 dot product's rounding, so rows whose terms cancel to near zero do not fail.
    func testLinearForwardMatchesDoubleReference() throws {
        for dtype in Self.kTypes {
            var rng = LCG(s: 23)
            let rows = 37, k = 768
            let bytes = randomBlocks(dtype, blocks: rows * k / 256, rng: &rng)
            let w = try tensor(bytes, dtype, rows: rows, k: k)
            let values = reference(dtype, w.data, count: rows * k)
            let T = 5
            let x = (0..<(T * k)).map { _ in rng.unit() * 2 - 1 }
            var ref = [Double](repeating: 0, count: T * rows), absSum = ref
            for t in 0..<T {
                for r in 0..<rows {
                    for i in 0..<k {
                        let p = Double(values[r * k + i]) * Double(x[t * k + i])
                        ref[t * rows + r] += p
                        absSum[t * rows + r] += abs(p)
                    }
                }
            }
            forEachLevel { level in
                for useT in [1, T] {
                    var out = [Float](repeating: .nan, count: useT * rows)
                    x.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in
                        linearForward(out: op.baseAddress!, inp: xp.baseAddress!, weight: w, T: useT)
                    } }
                    for i in 0..<(useT * rows) {
                        let err = abs(Double(out[i]) - ref[i])
                        XCTAssertLessThanOrEqual(err, 1e-4 * abs(ref[i]) + 1e-6 * absSum[i],
                                                 "\(dtype) level \(level) T=\(useT) index \(i): \(out[i]) vs \(ref[i])")
                    }
                }
            }
        }
    }

    /// The kernels write only rows [r0, r1), and rows wider than the on-stack scratch for x's block sums
    /// (more than 32768 columns) take the heap path.
    func testMatvecRowRangeAndWideRows() throws {
        let kernels: [(DType, (UnsafeRawPointer, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int, Int, Int) -> Void)] = [
            (.q4_K, { ck_matvec_q4_K($0, $1, $2, $3, $4, $5) }),
            (.q5_K, { ck_matvec_q5_K($0, $1, $2, $3, $4, $5) }),
            (.q6_K, { ck_matvec_q6_K($0, $1, $2, $3, $4, $5) }),
        ]
        for (dtype, kernel) in kernels {
            for (rows, k, r0, r1) in [(6, 256, 2, 5), (2, 129 * 256, 1, 2)] {
                var rng = LCG(s: 31)
                let bytes = randomBlocks(dtype, blocks: rows * k / 256, rng: &rng)
                let values = bytes.withUnsafeBytes { reference(dtype, $0.baseAddress!, count: rows * k) }
                let x = (0..<k).map { _ in rng.unit() * 2 - 1 }
                forEachLevel { level in
                    var y = [Float](repeating: 12345, count: rows)
                    bytes.withUnsafeBytes { w in y.withUnsafeMutableBufferPointer { yp in
                        kernel(w.baseAddress!, x, yp.baseAddress!, k, r0, r1)
                    } }
                    for r in 0..<rows {
                        if r < r0 || r >= r1 {
                            XCTAssertEqual(y[r], 12345, "\(dtype) level \(level): row \(r) outside the range was written")
                            continue
                        }
                        var s = 0.0, a = 0.0
                        for i in 0..<k { let p = Double(values[r * k + i]) * Double(x[i]); s += p; a += abs(p) }
                        XCTAssertLessThanOrEqual(abs(Double(y[r]) - s), 1e-4 * abs(s) + 1e-6 * a, "\(dtype) level \(level) k=\(k) row \(r)")
                    }
                }
            }
        }
    }

    /// `--int8-activations` against K-quant rows (AVX-512 VNNI): each row is the float64 sum of the reference's
    /// dequantized weights times the quantized activations (q̂·d per block of 32), to f32 rounding of the kernel's
    /// two terms per sub-block (scale and min, which can nearly cancel: the tolerance grows with the sub-block's
    /// range); through `linearForward` too, where a row's bits do not depend on how many sequences share the step.
    func testInt8ActivationRowsMatchFloat64SumOverQuantizedActivations() throws {
        var rng = LCG(s: 31)
        for dtype in Self.kTypes {
            // Narrow rows (K < 2048): wide Q4_K takes the panels' GEMM instead (the next test).
            for k in [256, 768, 1792] {
                let rows = 13, T = 3, nb = k / 32
                let bytes = randomBlocks(dtype, blocks: rows * k / 256, rng: &rng)
                let w = try tensor(bytes, dtype, rows: rows, k: k)
                let wf = bytes.withUnsafeBytes { reference(dtype, $0.baseAddress!, count: rows * k) }
                let x = (0..<(T * k)).map { _ in rng.unit() * 2 - 1 }
                var xq = [Int8](repeating: 0, count: T * k), xd = [Float](repeating: 0, count: T * nb)
                var xs = [Int32](repeating: 0, count: T * nb)
                for t in 0..<T {
                    x.withUnsafeBufferPointer { xp in xq.withUnsafeMutableBufferPointer { q in xd.withUnsafeMutableBufferPointer { d in
                        xs.withUnsafeMutableBufferPointer { s in
                            ck_quantize_x_q8(xp.baseAddress! + t * k, q.baseAddress! + t * k, d.baseAddress! + t * nb, s.baseAddress! + t * nb, k)
                        } } } }
                }
                var y = [Float](repeating: .nan, count: rows)
                let done: Int32 = bytes.withUnsafeBytes { wp in
                    switch dtype {
                    case .q4_K: return ck_matvec_q4_K_q8(wp.baseAddress!, xq, xd, xs, &y, k, 0, rows)
                    case .q5_K: return ck_matvec_q5_K_q8(wp.baseAddress!, xq, xd, xs, &y, k, 0, rows)
                    default: return ck_matvec_q6_K_q8(wp.baseAddress!, xq, xd, &y, k, 0, rows)
                    }
                }
                guard done != 0 else { throw XCTSkip("the integer K-quant rows need AVX-512 VNNI") }
                let levels = dtype == .q6_K ? 0.0 : dtype == .q5_K ? 32.0 : 16.0
                for r in 0..<rows {
                    var ref = 0.0, tol = 0.0
                    for s in 0..<nb {
                        let ws = (0..<32).map { Double(wf[r * k + s * 32 + $0]) }
                        let range = ws.max()! - ws.min()!, top = ws.map(abs).max()!
                        for j in 0..<32 {
                            let xv = Double(xq[s * 32 + j]) * Double(xd[s])
                            ref += ws[j] * xv
                            tol += (abs(ws[j]) + levels * range + 2 * top) * abs(xv)
                        }
                    }
                    XCTAssertEqual(Double(y[r]), ref, accuracy: 1e-6 * tol + 1e-30, "\(dtype) k \(k) row \(r)")
                }
                // The same rows through linearForward, one sequence at a time and three together.
                var alone = [Float](repeating: .nan, count: T * rows), together = alone
                x.withUnsafeBufferPointer { xp in
                    for t in 0..<T {
                        alone.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress! + t * rows, inp: xp.baseAddress! + t * k, weight: w, T: 1, activations: .int8) }
                    }
                    together.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress!, inp: xp.baseAddress!, weight: w, T: T, activations: .int8) }
                }
                XCTAssertEqual(Array(alone[0..<rows]).map(\.bitPattern), y.map(\.bitPattern), "\(dtype) k \(k): linearForward takes the integer rows")
                XCTAssertEqual(alone.map(\.bitPattern), together.map(\.bitPattern), "\(dtype) k \(k): one sequence vs three")
            }
        }
    }

    /// Wide Q4_K and Q6_K weights repacked into panels (`packedForInt8`, AVX-512 VNNI): at f32 precision (the
    /// default, three 8-bit levels) each output is the float64 product of the reference's dequantized weights and
    /// x, to f32 rounding of the kernel's scale, min and offset terms; with `--int8-activations`, the float64
    /// product over the quantized activations. Whole panels and a partial one (40 rows), one sequence, a batch and a
    /// prefill (GEMM) give the same bits per row.
    func testPackedKQuantPanelsMatchFloat64AndAreBatchInvariant() throws {
      for (dtype, superBlockPanelBytes) in [(DType.q4_K, 16 * 148), (.q6_K, 16 * 212)] {
        var rng = LCG(s: 41)
        let rows = 40, k = 2048, nb = k / 32, T = 20
        let bytes = randomBlocks(dtype, blocks: rows * k / 256, rng: &rng)
        let w = try tensor(bytes, dtype, rows: rows, k: k)
        let pw = w.packedForInt8()
        guard pw.int8Panels != nil else { throw XCTSkip("K-quant panels need AVX-512 VNNI") }
        XCTAssertEqual(pw.int8PanelBytes, 2 * (k / 256) * superBlockPanelBytes)
        let wf = bytes.withUnsafeBytes { reference(dtype, $0.baseAddress!, count: rows * k) }
        let x = (0..<(T * k)).map { _ in rng.unit() * 2 - 1 }
        /// Float64 product of row r with `xv` (k values) and the tolerance of the kernel's two terms per sub-block.
        func expect(_ r: Int, _ xv: [Double]) -> (Double, Double) {
            var ref = 0.0, tol = 0.0
            for s in 0..<nb {
                let ws = (0..<32).map { Double(wf[r * k + s * 32 + $0]) }
                let range = ws.max()! - ws.min()!, top = ws.map(abs).max()!
                for j in 0..<32 {
                    ref += ws[j] * xv[s * 32 + j]
                    tol += (abs(ws[j]) + 16 * range + 2 * top) * abs(xv[s * 32 + j])
                }
            }
            return (ref, 1e-6 * tol + 1e-30)
        }
        for activations in [ActivationPrecision.f32, .int8] {
            var alone = [Float](repeating: .nan, count: T * rows), batch = alone, prefill = alone
            x.withUnsafeBufferPointer { xp in
                for t in 0..<T {
                    alone.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress! + t * rows, inp: xp.baseAddress! + t * k, weight: pw, T: 1, activations: activations) }
                }
                batch.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress!, inp: xp.baseAddress!, weight: pw, T: 5, activations: activations) }
                prefill.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress!, inp: xp.baseAddress!, weight: pw, T: T, activations: activations, oneSequence: true) }
            }
            XCTAssertEqual(Array(alone[0..<(5 * rows)]).map(\.bitPattern), Array(batch[0..<(5 * rows)]).map(\.bitPattern), "\(dtype) \(activations): one vs a batch of 5")
            XCTAssertEqual(alone.map(\.bitPattern), prefill.map(\.bitPattern), "\(dtype) \(activations): one vs a prefill")
            for t in [0, 7, T - 1] {
                var xv = (0..<k).map { Double(x[t * k + $0]) }
                if activations == .int8 {
                    var q = [Int8](repeating: 0, count: k), d = [Float](repeating: 0, count: nb), s = [Int32](repeating: 0, count: nb)
                    x.withUnsafeBufferPointer { ck_quantize_x_q8($0.baseAddress! + t * k, &q, &d, &s, k) }
                    xv = (0..<k).map { Double(q[$0]) * Double(d[$0 / 32]) }
                }
                for r in 0..<rows {
                    let (ref, tol) = expect(r, xv)
                    XCTAssertEqual(Double(alone[t * rows + r]), ref, accuracy: tol, "\(dtype) \(activations) token \(t) row \(r)")
                }
            }
        }
      }
    }
}
