import LlamaAdapter
import CKernels
import XCTest

/// The SIMD block kernels (Q4_0, Q4_1, Q8_0) against a scalar dequantization written here from the
/// ggml block layouts, on random blocks with random scales.
final class QuantKernelTests: XCTestCase {
    struct LCG {
        var s: UInt64
        mutating func next() -> UInt64 { s = s &* 6364136223846793005 &+ 1442695040888963407; return s >> 33 }
        mutating func unit() -> Float { Float(next() % 1_000_000) / 1_000_000 }
    }

    static func half(_ f: Float) -> [UInt8] {
        var h: UInt16 = 0
        var v = f
        convertToHalf(src: &v, dst: &h, count: 1)
        return [UInt8(h & 0xff), UInt8(h >> 8)]
    }

    static func halfValue(_ b: ArraySlice<UInt8>) -> Float {
        var h = UInt16(b[b.startIndex]) | UInt16(b[b.startIndex + 1]) << 8
        var f: Float = 0
        convertToFloat(dtype: .f16, src: &h, dst: &f, count: 1)
        return f
    }

    /// A [rows, k] weight of `dtype` holding `bytes` (as `makeRows` writes them).
    static func tensor(_ bytes: [UInt8], _ dtype: DType, rows: Int, k: Int) throws -> Tensor {
        let storage = Storage(zeroedBytes: bytes.count)
        bytes.withUnsafeBytes { storage.base.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        return try Tensor(shape: [rows, k], dtype: dtype, storage: storage)
    }

    /// Random blocks and the values they stand for, decoded by the ggml rules.
    static func makeRows(_ dtype: DType, rows: Int, k: Int, rng: inout LCG) -> (bytes: [UInt8], values: [Float]) {
        var bytes: [UInt8] = []
        var values: [Float] = []
        for _ in 0..<(rows * k / 32) {
            let d = (rng.unit() - 0.5) * 0.2
            switch dtype {
            case .q4_0:
                let db = half(d); bytes += db
                let qs = (0..<16).map { _ in UInt8(rng.next() & 0xff) }
                bytes += qs
                let dv = halfValue(db[...])
                values += qs.map { Float(Int($0 & 15) - 8) * dv } + qs.map { Float(Int($0 >> 4) - 8) * dv }
            case .q4_1:
                let m = (rng.unit() - 0.5) * 0.3
                let db = half(d), mb = half(m); bytes += db + mb
                let qs = (0..<16).map { _ in UInt8(rng.next() & 0xff) }
                bytes += qs
                let dv = halfValue(db[...]), mv = halfValue(mb[...])
                values += qs.map { Float($0 & 15) * dv + mv } + qs.map { Float($0 >> 4) * dv + mv }
            case .q8_0:
                let db = half(d); bytes += db
                let qs = (0..<32).map { _ in Int8(truncatingIfNeeded: rng.next()) }
                bytes += qs.map { UInt8(bitPattern: $0) }
                let dv = halfValue(db[...])
                values += qs.map { Float($0) * dv }
            default: fatalError()
            }
        }
        return (bytes, values)
    }

    func checkType(_ dtype: DType) throws {
        var rng = LCG(s: 99)
        let rows = 37, k = 96
        let (bytes, values) = Self.makeRows(dtype, rows: rows, k: k, rng: &rng)
        XCTAssertEqual(bytes.count, dtype.byteCount(elements: rows * k))
        let w = try QuantKernelTests.tensor(bytes, dtype, rows: rows, k: k)
        // Dequantization.
        XCTAssertEqual(w.toFloatArray(), values, "\(dtype) dequantize")
        // Mat-vec and GEMM against the f32 reference.
        let T = 5
        let x = (0..<(T * k)).map { _ in rng.unit() * 2 - 1 }
        var ref = [Float](repeating: 0, count: T * rows)
        for t in 0..<T { for r in 0..<rows {
            var s: Double = 0
            for i in 0..<k { s += Double(values[r * k + i]) * Double(x[t * k + i]) }
            ref[t * rows + r] = Float(s)
        } }
        for useT in [1, T] {
            var out = [Float](repeating: 0, count: useT * rows)
            x.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in
                linearForward(out: op.baseAddress!, inp: xp.baseAddress!, weight: w, T: useT)
            } }
            for i in 0..<(useT * rows) {
                XCTAssertEqual(out[i], ref[i], accuracy: 1e-4 * max(1, abs(ref[i])), "\(dtype) T=\(useT) index \(i)")
            }
        }
    }

    /// Prefill GEMM (more rows than `matvecBatchLimit`): every dtype against a float64 product of the values the
    /// weights stand for, with row counts that leave partial panels and token counts that leave partial blocks;
    /// and a token's outputs do not depend on how many tokens share the call.
    func testPrefillGemmMatchesFloat64ReferenceAndIsBatchInvariant() throws {
        var rng = LCG(s: 7)
        for (dtype, k) in [(DType.f16, 77), (.f16, 4096), (.bf16, 50), (.f32, 33), (.q4_0, 96), (.q4_1, 64), (.q8_0, 160)] {
            let rows = 37, T = 23
            let values: [Float]
            let w: Tensor
            if [.q4_0, .q4_1, .q8_0].contains(dtype) {
                let (bytes, v) = Self.makeRows(dtype, rows: rows, k: k, rng: &rng)
                w = try QuantKernelTests.tensor(bytes, dtype, rows: rows, k: k)
                values = v
            } else {
                let raw = (0..<(rows * k)).map { _ in rng.unit() - 0.5 }
                switch dtype {
                case .f16:
                    w = Tensor(uninitialized: [rows, k], dtype: .f16)
                    raw.withUnsafeBufferPointer { convertToHalf(src: $0.baseAddress!, dst: w.mutableData.assumingMemoryBound(to: UInt16.self), count: raw.count) }
                case .bf16:
                    w = Tensor(uninitialized: [rows, k], dtype: .bf16)
                    let dst = w.mutableData.assumingMemoryBound(to: UInt16.self)
                    for (i, v) in raw.enumerated() { dst[i] = UInt16(v.bitPattern >> 16) }  // truncation: any bf16 will do
                default:
                    w = Tensor(raw, shape: [rows, k])
                }
                values = w.toFloatArray()
            }
            let x = (0..<(T * k)).map { _ in rng.unit() * 2 - 1 }
            var out = [Float](repeating: 0, count: T * rows), head = [Float](repeating: 0, count: 17 * rows)
            x.withUnsafeBufferPointer { xp in
                out.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress!, inp: xp.baseAddress!, weight: w, T: T) }
                head.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress!, inp: xp.baseAddress!, weight: w, T: 17) }
            }
            for t in 0..<T { for r in 0..<rows {
                var s: Double = 0, mag: Double = 0
                for i in 0..<k { s += Double(values[r * k + i]) * Double(x[t * k + i]); mag += abs(Double(values[r * k + i]) * Double(x[t * k + i])) }
                XCTAssertEqual(Double(out[t * rows + r]), s, accuracy: 1e-6 * max(1, mag), "\(dtype) k=\(k) t=\(t) r=\(r)")
            } }
            XCTAssertEqual(Array(out[0..<(17 * rows)]), head, "\(dtype) k=\(k): a token's outputs changed with the number of tokens in the call")
        }
    }

    func testQ4_0MatvecAndGemmMatchDequantizedReference() throws { try checkType(.q4_0) }
    func testQ4_1MatvecAndGemmMatchDequantizedReference() throws { try checkType(.q4_1) }
    func testQ8_0MatvecAndGemmMatchDequantizedReference() throws { try checkType(.q8_0) }

    func testTensorsAtOddOffsetsAreCopiedToAlignedMemoryWithTheSameValues() throws {
        // Files may place f16/f32 data at odd offsets (zip entries, safetensors, GGUF alignment 1); the C kernels
        // read through typed pointers, which must be aligned (UBSan reported the misaligned loads).
        let halves: [UInt16] = [0x3C00, 0xC000, 0x3800, 0x0000]  // 1, -2, 0.5, 0 in IEEE half precision
        let storage = Storage(zeroedBytes: 1 + 2 * halves.count)
        for (i, h) in halves.enumerated() { storage.base.storeBytes(of: h, toByteOffset: 1 + 2 * i, as: UInt16.self) }
        let t = try Tensor(shape: [4], dtype: .f16, storage: storage, byteOffset: 1)
        XCTAssertEqual(Int(bitPattern: t.data) % 2, 0)
        XCTAssertEqual(t.toFloatArray(), [1, -2, 0.5, 0])
        let f = Storage(zeroedBytes: 2 + 8)
        f.base.storeBytes(of: Float(3.25).bitPattern, toByteOffset: 2, as: UInt32.self)
        f.base.storeBytes(of: Float(-7).bitPattern, toByteOffset: 6, as: UInt32.self)
        let g = try Tensor(shape: [2], dtype: .f32, storage: f, byteOffset: 2)
        XCTAssertEqual(Int(bitPattern: g.data) % 4, 0)
        XCTAssertEqual(g.toFloatArray(), [3.25, -7])
        // Aligned data is not copied: weights from mapped files stay mapped.
        let aligned = try Tensor(shape: [2], dtype: .f16, storage: storage, byteOffset: 0)
        XCTAssertEqual(aligned.data, UnsafeRawPointer(storage.base))
    }

    func testF16AndBF16MatvecMatchF32() throws {
        var rng = LCG(s: 5)
        let rows = 19, k = 77
        let vals = (0..<(rows * k)).map { _ in rng.unit() - 0.5 }
        let f32 = Tensor(vals, shape: [rows, k])
        let f16 = Tensor(uninitialized: [rows, k], dtype: .f16)
        vals.withUnsafeBufferPointer { convertToHalf(src: $0.baseAddress!, dst: f16.mutableData.assumingMemoryBound(to: UInt16.self), count: vals.count) }
        let x = (0..<(3 * k)).map { _ in rng.unit() - 0.5 }
        for T in [1, 3] {
            var a = [Float](repeating: 0, count: T * rows), b = a
            x.withUnsafeBufferPointer { xp in
                a.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress!, inp: xp.baseAddress!, weight: f32, T: T) }
                b.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress!, inp: xp.baseAddress!, weight: f16, T: T) }
            }
            for i in a.indices { XCTAssertEqual(a[i], b[i], accuracy: 2e-3, "T=\(T) \(i)") }
        }
    }

    /// Wide inputs (K ≥ 6144) take six rows per pass: each row must get the bits it gets alone (one row per call
    /// takes the one-row loop) whatever rows share the call, and the float64 dot product of its values, for f32,
    /// f16 and bf16 weights and K with no tail, a 16-wide tail and a scalar tail.
    func testWideInputMatvecGivesEachRowItsLoneRowBitsAndTheFloat64Product() {
        var rng = LCG(s: 11)
        let rows = 23
        for k in [6144, 6160, 6150, 11008] {
            let vals = (0..<(rows * k)).map { _ in rng.unit() - 0.5 }
            let x = (0..<k).map { _ in rng.unit() - 0.5 }
            var half = [UInt16](repeating: 0, count: vals.count)
            vals.withUnsafeBufferPointer { convertToHalf(src: $0.baseAddress!, dst: &half, count: vals.count) }
            // bf16: the top half of each float's bits (truncation, so the values are exact to rebuild).
            let bf = vals.map { UInt16($0.bitPattern >> 16) }
            let decoded: [(String, [Double])] = [
                ("f32", vals.map(Double.init)),
                ("f16", half.map { h in var h = h, f: Float = 0; convertToFloat(dtype: .f16, src: &h, dst: &f, count: 1); return Double(f) }),
                ("bf16", bf.map { Double(Float(bitPattern: UInt32($0) << 16)) }),
            ]
            for (name, w64) in decoded {
                func run(_ r0: Int, _ r1: Int, _ y: inout [Float]) {
                    switch name {
                    case "f32": ck_matvec_f32(vals, x, &y, k, r0, r1)
                    case "f16": ck_matvec_f16(half, x, &y, k, r0, r1)
                    default: ck_matvec_bf16(bf, x, &y, k, r0, r1)
                    }
                }
                var alone = [Float](repeating: 0, count: rows)
                for r in 0..<rows { run(r, r + 1, &alone) }
                for (r0, r1) in [(0, rows), (1, rows), (5, 18)] {
                    var y = [Float](repeating: 0, count: rows)
                    run(r0, r1, &y)
                    for r in r0..<r1 { XCTAssertEqual(y[r].bitPattern, alone[r].bitPattern, "\(name) k=\(k) rows \(r0)..<\(r1): row \(r)") }
                }
                for r in 0..<rows {
                    var ref = 0.0
                    for i in 0..<k { ref += w64[r * k + i] * Double(x[i]) }
                    XCTAssertEqual(Double(alone[r]), ref, accuracy: 1e-4, "\(name) k=\(k) row \(r)")
                }
            }
        }
    }
}

/// `--quantize` on load: re-encoded weights keep the model's answers close to the f16 original.
final class RequantizeTests: XCTestCase {
    func testQ8_0RequantizedModelKeepsReferenceGreedyTokens() throws {
        let c = Fixtures.tinyLlama.cases[1]
        let loaded = try ModelLoader.load(path: Fixtures.path("tiny_llama/model"), maxSeqLen: 64, quantize: .q8_0)
        XCTAssertEqual(loaded.model.weights.layers[0].wq.dtype, .q8_0)
        let f16 = try ModelLoader.load(path: Fixtures.path("tiny_llama/model"), maxSeqLen: 64)
        let a = try loaded.model.forwardArray(tokens: c.tokens, state: DecoderState(model: loaded.model))
        let b = try f16.model.forwardArray(tokens: c.tokens, state: DecoderState(model: f16.model))
        var worst: Float = 0
        for (x, y) in zip(a, b) { worst = max(worst, abs(x - y)) }
        XCTAssertLessThan(worst, 0.5, "q8_0 vs f16 logits (the fixture's logits span about 30 units)")
        XCTAssertEqual(Sampler.argmax(a), c.greedy_tokens[0])
    }

    func testQuantizeRefusesUnsupportedTypes() throws {
        let f16 = try ModelLoader.load(path: Fixtures.path("tiny_llama/model"), maxSeqLen: 64)
        XCTAssertThrowsError(try f16.model.weights.quantized(to: .q6_K))
    }
}

/// The opt-in 8-bit activation path stays close to the exact f32 path (it quantizes x per 32-block).
final class Int8ActivationTests: XCTestCase {
    func testInt8ActivationMatvecIsCloseToF32() throws {
        var rng = QuantKernelTests.LCG(s: 7)
        for dtype in [DType.q4_0, .q4_1, .q8_0] {
            let rows = 40, k = 256
            let (bytes, _) = QuantKernelTests.makeRows(dtype, rows: rows, k: k, rng: &rng)
            let w = try QuantKernelTests.tensor(bytes, dtype, rows: rows, k: k)
            let x = (0..<k).map { _ in rng.unit() * 2 - 1 }
            var exact = [Float](repeating: 0, count: rows), fast = exact
            x.withUnsafeBufferPointer { xp in
                exact.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress!, inp: xp.baseAddress!, weight: w, T: 1) }
                fast.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress!, inp: xp.baseAddress!, weight: w, T: 1, activations: .int8) }
            }
            let norm = exact.map { $0 * $0 }.reduce(0, +).squareRoot()
            let err = zip(exact, fast).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
            XCTAssertLessThan(err / norm, 0.02, "\(dtype): relative error \(err / norm)")
            XCTAssertNotEqual(exact, fast, "\(dtype): the int8 path should not be the f32 path")
        }
    }

    /// Prefill with 8-bit activations (the integer GEMM on AVX-512 VNNI machines; skipped elsewhere) computes, for
    /// every token and row (37 rows: two full 16-row panels and a partial one), Σ w·x̂ over the token's quantized
    /// activations: checked against a float64 sum over the dequantized weights.
    func testInt8PrefillMatchesFloat64SumOverQuantizedActivations() throws {
        guard ck_gemm_q8act(0, nil, nil, 0, 32, 0, 0, nil, nil, nil, 0, nil, 0) != 0 else {
            throw XCTSkip("no AVX-512 VNNI: int8 prefill falls back to the exact f32 GEMM")
        }
        var rng = QuantKernelTests.LCG(s: 13)
        for dtype in [DType.q4_0, .q4_1, .q8_0] {
            let rows = 37, k = 320, T = 11, nb = k / 32
            let (bytes, values) = QuantKernelTests.makeRows(dtype, rows: rows, k: k, rng: &rng)
            let w = try QuantKernelTests.tensor(bytes, dtype, rows: rows, k: k)
            let x = (0..<(T * k)).map { _ in rng.unit() * 4 - 2 }
            var y = [Float](repeating: .nan, count: T * rows)
            x.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer { gemmWeight(out: $0.baseAddress!, inp: xp.baseAddress!, weight: w, T: T, activations: .int8) }
            }
            for t in 0..<T {
                var xq = [Int8](repeating: 0, count: k), xd = [Float](repeating: 0, count: nb), isum = [Int32](repeating: 0, count: nb)
                Array(x[(t * k)..<(t * k + k)]).withUnsafeBufferPointer { ck_quantize_x_q8($0.baseAddress!, &xq, &xd, &isum, k) }
                for r in 0..<rows {
                    var ref = 0.0, scale = 0.0
                    for j in 0..<k {
                        let v = Double(values[r * k + j]) * Double(xd[j / 32]) * Double(xq[j])
                        ref += v; scale += abs(v)
                    }
                    XCTAssertEqual(Double(y[t * rows + r]), ref, accuracy: 1e-5 * scale, "\(dtype) token \(t) row \(r)")
                }
            }
        }
    }

    /// With 8-bit activations on VNNI machines, several rows take the integer GEMM, whose outputs for a row do not
    /// depend on the rows computed with it: 5 sequences decoded together and a 19-token prefill give the same bits;
    /// a lone row's mat-vec agrees with them to f32 rounding.
    func testInt8PathsAreBatchInvariant() throws {
        var rng = QuantKernelTests.LCG(s: 17)
        for dtype in [DType.q4_0, .q4_1, .q8_0] {
            let rows = 45, k = 256, T = 19
            let (bytes, _) = QuantKernelTests.makeRows(dtype, rows: rows, k: k, rng: &rng)
            let w = try QuantKernelTests.tensor(bytes, dtype, rows: rows, k: k)
            let x = (0..<(T * k)).map { _ in rng.unit() * 2 - 1 }
            var alone = [Float](repeating: 0, count: T * rows), five = alone, all = alone
            x.withUnsafeBufferPointer { xp in
                for t in 0..<T {
                    alone.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress! + t * rows, inp: xp.baseAddress! + t * k, weight: w, T: 1, activations: .int8) }
                }
                for t0 in stride(from: 0, to: T, by: 5) {
                    let n = min(5, T - t0)
                    five.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress! + t0 * rows, inp: xp.baseAddress! + t0 * k, weight: w, T: n, activations: .int8) }
                }
                all.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress!, inp: xp.baseAddress!, weight: w, T: T, activations: .int8, oneSequence: true) }
            }
            if ck_gemm_q8act(0, nil, nil, 0, 32, 0, 0, nil, nil, nil, 0, nil, 0) != 0 {
                XCTAssertEqual(five, all, "\(dtype): 5 rows at once vs a 19-row prefill")
                let scale = alone.map { abs($0) }.max()!
                for (a, b) in zip(alone, five) { XCTAssertEqual(a, b, accuracy: 1e-5 * scale, "\(dtype): one row vs 5") }
            } else {
                // Without VNNI: the integer mat-vecs per row, alone or grouped.
                XCTAssertEqual(alone, five, "\(dtype): 5 rows at once")
            }
        }
    }

    /// Activations quantize as llama.cpp's reference does: d = max|x| / 127, q = round(x / d) with halves away from
    /// zero (C's roundf), checked against Swift's own rounding on random blocks and on exact halves and near-halves.
    func testActivationQuantizationRoundsHalvesAwayFromZero() {
        var rng = QuantKernelTests.LCG(s: 29)
        var x = (0..<(32 * 40)).map { _ in rng.unit() * 6 - 3 }
        // Block 0: max 127, so d = 1 and x itself is x / d: halves, and the floats next to them.
        let halves: [Float] = [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -126.5, 0.49999997, -0.49999997, 0.50000006, 3.4999998]
        for (i, h) in halves.enumerated() { x[i] = h }
        x[31] = 127
        var xq = [Int8](repeating: 0, count: x.count), xd = [Float](repeating: 0, count: x.count / 32)
        var isum = [Int32](repeating: 0, count: x.count / 32)
        ck_quantize_x_q8(x, &xq, &xd, &isum, x.count)
        for b in 0..<(x.count / 32) {
            let block = x[(b * 32)..<(b * 32 + 32)]
            let d = block.map { abs($0) }.max()! / 127, id = d != 0 ? 1 / d : 0
            XCTAssertEqual(xd[b], d, "block \(b) scale")
            var sum: Int32 = 0
            for j in 0..<32 {
                let q = Int8((block[b * 32 + j] * id).rounded())
                XCTAssertEqual(xq[b * 32 + j], q, "block \(b) element \(j): \(block[b * 32 + j])")
                sum += Int32(q)
            }
            XCTAssertEqual(isum[b], sum, "block \(b) sum")
        }
        XCTAssertEqual(Array(xq[0..<12]), [1, -1, 2, -2, 3, -3, 127, -127, 0, 0, 1, 3])
    }

    /// Weights repacked at load for the integer GEMM (`packedForInt8`) give the same bits as panels built from the
    /// ggml rows on every call, for every row count, row range and dtype: 45 rows (a partial last panel read from the
    /// rows), an odd block count (panels not 64-byte aligned), and a two-weight group whose second weight's ranges
    /// start off a panel boundary. With packed panels one row takes the GEMM too, so one row = five = a prefill.
    /// Unpacking gives back the file's bytes exactly: whole panels (the vector transpose), ranges that start or end
    /// inside a panel (the scalar loop), for each kind, including Q8_0's +128 flip and Q4_1's mins.
    func testUnpackedPanelsAreTheOriginalRows() throws {
        guard ck_gemm_q8act(0, nil, nil, 0, 32, 0, 0, nil, nil, nil, 0, nil, 0) != 0 else {
            throw XCTSkip("no AVX-512 VNNI: no packed panels")
        }
        var rng = QuantKernelTests.LCG(s: 41)
        for (kind, dtype) in [(Int32(0), DType.q4_0), (1, .q4_1), (2, .q8_0)] {
            let rows = 48, k = 96, rowBytes = dtype.byteCount(elements: k)
            let (bytes, _) = QuantKernelTests.makeRows(dtype, rows: rows, k: k, rng: &rng)
            var packed = [UInt8](repeating: 0, count: bytes.count)
            XCTAssertEqual(ck_q8act_pack(kind, bytes, k, 0, rows / 16, &packed), 1)
            XCTAssertNotEqual(packed, bytes)
            for (r0, r1) in [(0, 48), (16, 32), (3, 40), (17, 18), (0, 20)] {
                var out = [UInt8](repeating: 0xAA, count: (r1 - r0) * rowBytes)
                ck_q8act_unpack(kind, packed, k, r0, r1, &out)
                XCTAssertEqual(out, Array(bytes[(r0 * rowBytes)..<(r1 * rowBytes)]), "\(dtype) rows \(r0)..<\(r1)")
            }
        }
    }

    func testPackedPanelsGiveTheBitsOfRowPanelsAndMakeOneRowBatchInvariant() throws {
        guard ck_gemm_q8act(0, nil, nil, 0, 32, 0, 0, nil, nil, nil, 0, nil, 0) != 0 else {
            throw XCTSkip("no AVX-512 VNNI: no packed panels")
        }
        var rng = QuantKernelTests.LCG(s: 23)
        for dtype in [DType.q4_0, .q4_1, .q8_0] {
            for k in [320, 352] {
                let rows = 45, T = 11
                func weight(_ n: Int) throws -> Tensor {
                    let (bytes, _) = QuantKernelTests.makeRows(dtype, rows: n, k: k, rng: &rng)
                    return try QuantKernelTests.tensor(bytes, dtype, rows: n, k: k)
                }
                let w = try weight(rows), w2 = try weight(70)
                let pw = w.packedForInt8(), pw2 = w2.packedForInt8()
                XCTAssertNotNil(pw.int8Panels, "\(dtype) k \(k): packed")
                let x = (0..<(T * k)).map { _ in rng.unit() * 2 - 1 }
                x.withUnsafeBufferPointer { xp in
                    for n in [1, 3, T] {
                        var a = [Float](repeating: .nan, count: n * rows), b = a
                        a.withUnsafeMutableBufferPointer { gemmWeight(out: $0.baseAddress!, inp: xp.baseAddress!, weight: w, T: n, activations: .int8) }
                        b.withUnsafeMutableBufferPointer { gemmWeight(out: $0.baseAddress!, inp: xp.baseAddress!, weight: pw, T: n, activations: .int8) }
                        XCTAssertEqual(a, b, "\(dtype) k \(k) T \(n): GEMM over packed vs row panels")
                        // A group: the second weight's rows start at 45 in the shared row numbering (2 rows at
                        // least: one row of unpacked weights takes the per-row mat-vec, whose bits differ).
                        let m = max(n, 2)
                        var g1 = [Float](repeating: .nan, count: m * rows), g2 = [Float](repeating: .nan, count: m * 70)
                        var h1 = g1, h2 = g2
                        g1.withUnsafeMutableBufferPointer { o1 in g2.withUnsafeMutableBufferPointer { o2 in
                            matvecGroup(outs: [o1.baseAddress!, o2.baseAddress!], x: xp.baseAddress!, T: m, weights: [w, w2], activations: .int8)
                        } }
                        h1.withUnsafeMutableBufferPointer { o1 in h2.withUnsafeMutableBufferPointer { o2 in
                            matvecGroup(outs: [o1.baseAddress!, o2.baseAddress!], x: xp.baseAddress!, T: m, weights: [pw, pw2], activations: .int8)
                        } }
                        XCTAssertEqual(g1, h1, "\(dtype) k \(k) T \(n): grouped first weight")
                        XCTAssertEqual(g2, h2, "\(dtype) k \(k) T \(n): grouped second weight")
                    }
                    var alone = [Float](repeating: 0, count: T * rows), five = alone, all = alone
                    for t in 0..<T {
                        alone.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress! + t * rows, inp: xp.baseAddress! + t * k, weight: pw, T: 1, activations: .int8) }
                    }
                    for t0 in stride(from: 0, to: T, by: 5) {
                        five.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress! + t0 * rows, inp: xp.baseAddress! + t0 * k, weight: pw, T: min(5, T - t0), activations: .int8) }
                    }
                    all.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress!, inp: xp.baseAddress!, weight: pw, T: T, activations: .int8, oneSequence: true) }
                    XCTAssertEqual(alone, five, "\(dtype) k \(k): one row vs five, packed")
                    XCTAssertEqual(alone, all, "\(dtype) k \(k): one row vs a prefill, packed")
                }
            }
        }
    }

    /// The SIMD int8 kernels compute Σ w·x̂ with x̂ = xd·xq, the quantized activations, to f32 rounding: checked
    /// against a float64 sum over the dequantized weights and the same quantized activations, for every row.
    func testInt8KernelsMatchFloat64SumOverQuantizedActivations() throws {
        var rng = QuantKernelTests.LCG(s: 11)
        for dtype in [DType.q4_0, .q4_1, .q8_0] {
            let rows = 37, k = 320
            let (bytes, values) = QuantKernelTests.makeRows(dtype, rows: rows, k: k, rng: &rng)
            let x = (0..<k).map { _ in rng.unit() * 4 - 2 }
            var xq = [Int8](repeating: 0, count: k), xd = [Float](repeating: 0, count: k / 32)
            var isum = [Int32](repeating: 0, count: k / 32), y = [Float](repeating: 0, count: rows)
            ck_quantize_x_q8(x, &xq, &xd, &isum, k)
            for b in 0..<(k / 32) { XCTAssertEqual(isum[b], xq[(b * 32)..<(b * 32 + 32)].reduce(Int32(0)) { $0 + Int32($1) }) }
            bytes.withUnsafeBytes { w in
                switch dtype {
                case .q4_0: ck_matvec_q4_0_q8(w.baseAddress!, xq, xd, isum, &y, k, 0, rows)
                case .q4_1: ck_matvec_q4_1_q8(w.baseAddress!, xq, xd, isum, &y, k, 0, rows)
                default: ck_matvec_q8_0_q8(w.baseAddress!, xq, xd, isum, &y, k, 0, rows)
                }
            }
            for r in 0..<rows {
                var ref = 0.0, scale = 0.0
                for j in 0..<k {
                    let t = Double(values[r * k + j]) * Double(xd[j / 32]) * Double(xq[j])
                    ref += t; scale += abs(t)
                }
                XCTAssertEqual(Double(y[r]), ref, accuracy: 1e-5 * scale, "\(dtype) row \(r)")
            }
        }
    }
}

/// The default mode's integer path: activations split into three 8-bit levels against weights with packed panels.
final class LevelActivationTests: XCTestCase {
    static var vnni: Bool { ck_gemm_q8act(0, nil, nil, 0, 32, 0, 0, nil, nil, nil, 0, nil, 0) != 0 }

    /// Activations with a wide range (outliers 1000x the rest, tiny values, an all-zero block, denormals) come back
    /// from their three levels to within 1/254³ (about 2^-24) of each block's largest magnitude, checked in float64
    /// (each level's remainder is at most half a step, a 254th of the level's range), and level 0 is exactly the
    /// one-level quantization of `--int8-activations`.
    func testThreeLevelsReconstructActivationsToA254CubedthOfTheBlockMaximum() {
        var rng = QuantKernelTests.LCG(s: 31)
        let n = 32 * 64
        var x = (0..<n).map { _ in rng.unit() * 2 - 1 }
        for i in stride(from: 5, to: n, by: 97) { x[i] *= 1000 }
        for i in 64..<96 { x[i] = 0 }
        for i in 96..<128 { x[i] *= 1e-30 }
        x[130] = 1e-40
        x[200] = -Float.greatestFiniteMagnitude / 4
        let nb = n / 32
        var q = [Int8](repeating: 0, count: 3 * n), d = [Float](repeating: 0, count: 3 * nb), s = [Int32](repeating: 0, count: 3 * nb)
        ck_quantize_x_q8_levels(x, 3, &q, &d, &s, n)
        var q1 = [Int8](repeating: 0, count: n), d1 = [Float](repeating: 0, count: nb), s1 = [Int32](repeating: 0, count: nb)
        ck_quantize_x_q8(x, &q1, &d1, &s1, n)
        // A block's three levels side by side: level l of block b at q[(3b + l)·32 ..], d[3b + l], s[3b + l].
        XCTAssertEqual((0..<nb).flatMap { q[(96 * $0)..<(96 * $0 + 32)] }, q1, "level 0 = the 8-bit activations")
        XCTAssertEqual((0..<nb).map { d[3 * $0] }, d1)
        XCTAssertEqual((0..<nb).map { s[3 * $0] }, s1)
        for b in 0..<nb {
            let amax = Double(x[(b * 32)..<(b * 32 + 32)].map { abs($0) }.max()!)
            for l in 0..<3 {
                XCTAssertEqual(s[3 * b + l], (0..<32).reduce(Int32(0)) { $0 + Int32(q[(3 * b + l) * 32 + $1]) }, "block \(b) level \(l) sum")
            }
            for j in 0..<32 {
                let i = b * 32 + j
                let back = (0..<3).reduce(0.0) { $0 + Double(q[(3 * b + $1) * 32 + j]) * Double(d[3 * b + $1]) }
                XCTAssertLessThanOrEqual(abs(back - Double(x[i])), amax / (254 * 254 * 254) * 1.001, "element \(i) = \(x[i])")
            }
        }
    }

    /// Against Q4_0/Q4_1/Q8_0 weights with packed panels, the default (f32-precision) mode lands as close to a
    /// float64 sum over the dequantized weights as f32 FMAs on the unpacked weights do, for one row, five rows and a
    /// 19-token prefill (K 2048: the prefill takes the three-level GEMM too), and those three give the same bits.
    func testPackedWeightsAtF32PrecisionAreAsCloseToFloat64AsF32FMAsAndBatchInvariant() throws {
        guard Self.vnni else { throw XCTSkip("no AVX-512 VNNI: no packed panels, f32 FMAs only") }
        var rng = QuantKernelTests.LCG(s: 37)
        for dtype in [DType.q4_0, .q4_1, .q8_0] {
            let rows = 45, k = 2048, T = 19
            let (bytes, values) = QuantKernelTests.makeRows(dtype, rows: rows, k: k, rng: &rng)
            let plain = try QuantKernelTests.tensor(bytes, dtype, rows: rows, k: k)
            let packed = plain.packedForInt8()
            XCTAssertNotNil(packed.int8Panels)
            var x = (0..<(T * k)).map { _ in rng.unit() * 2 - 1 }
            for i in stride(from: 3, to: T * k, by: 211) { x[i] *= 300 }
            var fma = [Float](repeating: 0, count: T * rows), alone = fma, five = fma, prefill = fma
            x.withUnsafeBufferPointer { xp in
                let xb = xp.baseAddress!
                for t in 0..<T {
                    fma.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress! + t * rows, inp: xb + t * k, weight: plain, T: 1) }
                    alone.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress! + t * rows, inp: xb + t * k, weight: packed, T: 1) }
                }
                for t0 in stride(from: 0, to: T, by: 5) {
                    let m = min(5, T - t0)
                    five.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress! + t0 * rows, inp: xb + t0 * k, weight: packed, T: m) }
                }
                prefill.withUnsafeMutableBufferPointer { linearForward(out: $0.baseAddress!, inp: xb, weight: packed, T: T, oneSequence: true) }
            }
            XCTAssertEqual(alone, five, "\(dtype): one row vs five")
            XCTAssertEqual(alone, prefill, "\(dtype): one row vs a 19-token prefill")
            XCTAssertNotEqual(alone, fma, "\(dtype): the packed weights take the integer path")
            var errFMA = 0.0, errLevels = 0.0
            for t in 0..<T {
                for r in 0..<rows {
                    var ref = 0.0, scale = 0.0
                    for j in 0..<k {
                        let v = Double(values[r * k + j]) * Double(x[t * k + j])
                        ref += v; scale += abs(v)
                    }
                    errFMA += abs(Double(fma[t * rows + r]) - ref) / scale
                    errLevels += abs(Double(alone[t * rows + r]) - ref) / scale
                    XCTAssertEqual(Double(alone[t * rows + r]), ref, accuracy: 1e-6 * scale, "\(dtype) token \(t) row \(r)")
                }
            }
            XCTAssertLessThan(errLevels, 2 * errFMA, "\(dtype): mean relative error, levels \(errLevels / Double(T * rows)) vs FMAs \(errFMA / Double(T * rows))")
        }
    }
}
