import LlamaAdapter
import XCTest

/// Every backward kernel against central finite differences of its own f32 forward, on small random shapes.
/// The scalar checked is a random projection L = Σ r·out (accumulated in Double), so every output element
/// contributes with a different weight; the step (1e-2, 1e-3 for the norms' inputs) and the tolerance (relative
/// L2 error 2e-3; the worst measured is 2e-4) fit f32. Shapes are chosen so the pool splits the work in two.
final class BackwardTests: XCTestCase {
    private struct Rng {
        var s: UInt64
        mutating func next() -> UInt64 { s = s &* 6364136223846793005 &+ 1442695040888963407; return s >> 33 }
        /// Uniform in [-scale, scale).
        mutating func uniform(_ scale: Float = 1) -> Float { (Float(next() % 1_000_000) / 500_000 - 1) * scale }
        mutating func array(_ n: Int, _ scale: Float = 1) -> [Float] { (0..<n).map { _ in uniform(scale) } }
    }

    /// Σ r·out in Double.
    private func project(_ out: [Float], _ r: [Float]) -> Double {
        zip(out, r).reduce(0) { $0 + Double($1.0) * Double($1.1) }
    }

    /// Central differences of `loss` with respect to the elements `indices` of `x` (all by default).
    private func numericGradient(_ x: [Float], h: Float = 1e-2, at indices: [Int]? = nil, _ loss: ([Float]) -> Double) -> [Float] {
        let indices = indices ?? Array(x.indices)
        var g = [Float](repeating: 0, count: indices.count)
        var xp = x
        for (j, i) in indices.enumerated() {
            xp[i] = x[i] + h
            let lp = loss(xp)
            xp[i] = x[i] - h
            let lm = loss(xp)
            xp[i] = x[i]
            g[j] = Float((lp - lm) / Double(2 * h))
        }
        return g
    }

    /// Relative L2 error below `tol`, and a gradient that is not trivially zero.
    private func assertGradient(_ analytic: [Float], _ numeric: [Float], _ name: String, tol: Double = 2e-3,
                                file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(analytic.count, numeric.count, name, file: file, line: line)
        var diff: Double = 0, na: Double = 0, nn: Double = 0
        for (a, n) in zip(analytic, numeric) {
            diff += Double(a - n) * Double(a - n); na += Double(a) * Double(a); nn += Double(n) * Double(n)
        }
        let err = diff.squareRoot() / max(na.squareRoot(), nn.squareRoot(), 1e-12)
        XCTAssertGreaterThan(nn.squareRoot(), 1e-6, "\(name): finite-difference gradient is zero", file: file, line: line)
        XCTAssertLessThan(err, tol, "\(name): relative error \(err)", file: file, line: line)
    }

    private func zeros(_ n: Int) -> [Float] { [Float](repeating: 0, count: n) }

    // MARK: - Linear

    private func linearOut(_ x: [Float], _ w: [Float], _ b: [Float], T: Int, N: Int, K: Int) -> [Float] {
        var out = zeros(T * N)
        let wt = Tensor(w, shape: [N, K])
        b.withUnsafeBufferPointer { bp in linearForward(out: &out, inp: x, weight: wt, bias: bp.baseAddress, T: T) }
        return out
    }

    func testLinearBackwardMatchesFiniteDifferencesForInputWeightAndBias() {
        // K = 128 and N = 32: both the input-gradient bands and the weight-gradient rows split over two threads.
        var rng = Rng(s: 1)
        let T = 3, K = 128, N = 32
        let x = rng.array(T * K), w = rng.array(N * K), b = rng.array(N), r = rng.array(T * N)
        var dx = zeros(T * K), dw = zeros(N * K), db = zeros(N)
        linearBackward(dInp: &dx, dWeight: &dw, dBias: &db, dOut: r, inp: x, weight: Tensor(w, shape: [N, K]), T: T)
        assertGradient(dx, numericGradient(x) { project(linearOut($0, w, b, T: T, N: N, K: K), r) }, "dInp")
        // Every 13th weight (coprime with K, so all columns and rows are visited): 4096 would take seconds.
        let some = Array(stride(from: 0, to: N * K, by: 13))
        assertGradient(some.map { dw[$0] }, numericGradient(w, at: some) { project(linearOut(x, $0, b, T: T, N: N, K: K), r) },
                       "dWeight")
        assertGradient(db, numericGradient(b) { project(linearOut(x, w, $0, T: T, N: N, K: K), r) }, "dBias")
    }

    func testLinearBackwardThroughF16WeightGivesTheSameInputGradientAsItsF32Copy() throws {
        var rng = Rng(s: 2)
        let T = 5, K = 128, N = 40
        let w = rng.array(N * K), r = rng.array(T * N)
        let w16 = Tensor(uninitialized: [N, K], dtype: .f16)
        try quantize(dtype: .f16, src: w, dst: w16.mutableData, count: N * K)
        var d16 = zeros(T * K), d32 = zeros(T * K)
        linearBackward(dInp: &d16, dWeight: nil, dBias: nil, dOut: r, inp: nil, weight: w16, T: T)
        linearBackward(dInp: &d32, dWeight: nil, dBias: nil, dOut: r, inp: nil, weight: w16.toF32(), T: T)
        for i in 0..<(T * K) { XCTAssertEqual(d16[i], d32[i], accuracy: 1e-3) }
    }

    func testLinearBackwardThroughQ8WeightGivesTheSameInputGradientAsItsDequantizedCopy() throws {
        // K = 128: four Q8_0 blocks, so the column bands of the two threads cut at a block boundary.
        var rng = Rng(s: 3)
        let T = 3, K = 128, N = 20
        let w = rng.array(N * K), r = rng.array(T * N)
        let wq = Tensor(uninitialized: [N, K], dtype: .q8_0)
        try quantize(dtype: .q8_0, src: w, dst: wq.mutableData, count: N * K)
        var dq = zeros(T * K), d32 = zeros(T * K)
        linearBackward(dInp: &dq, dWeight: nil, dBias: nil, dOut: r, inp: nil, weight: wq, T: T)
        linearBackward(dInp: &d32, dWeight: nil, dBias: nil, dOut: r, inp: nil, weight: wq.toF32(), T: T)
        for i in 0..<(T * K) { XCTAssertEqual(dq[i], d32[i], accuracy: 1e-4) }
    }

    // MARK: - Norms

    func testRMSNormBackwardMatchesFiniteDifferences() {
        var rng = Rng(s: 4)
        let T = 3, C = 16, eps: Float = 1e-5
        let x = rng.array(T * C), w = rng.array(C), r = rng.array(T * C)
        func f(_ x: [Float], _ w: [Float]) -> Double {
            var out = zeros(T * C)
            rmsnormForward(out: &out, inp: x, weight: w, T: T, C: C, eps: eps)
            return project(out, r)
        }
        var dx = zeros(T * C), dw = zeros(C)
        rmsnormBackward(dInp: &dx, dWeight: &dw, dOut: r, inp: x, weight: w, T: T, C: C, eps: eps)
        assertGradient(dx, numericGradient(x, h: 1e-3) { f($0, w) }, "dInp")
        assertGradient(dw, numericGradient(w) { f(x, $0) }, "dWeight")
    }

    func testLayerNormBackwardMatchesFiniteDifferences() {
        var rng = Rng(s: 5)
        let T = 4, C = 12, eps: Float = 1e-5
        let x = rng.array(T * C, 2), w = rng.array(C), b = rng.array(C), r = rng.array(T * C)
        func f(_ x: [Float], _ w: [Float], _ b: [Float]) -> Double {
            var out = zeros(T * C)
            layerNormForward(out: &out, inp: x, weight: w, bias: b, T: T, C: C, eps: eps)
            return project(out, r)
        }
        var dx = zeros(T * C), dw = zeros(C), db = zeros(C)
        layerNormBackward(dInp: &dx, dWeight: &dw, dBias: &db, dOut: r, inp: x, weight: w, T: T, C: C, eps: eps)
        assertGradient(dx, numericGradient(x, h: 1e-3) { f($0, w, b) }, "dInp")
        assertGradient(dw, numericGradient(w) { f(x, $0, b) }, "dWeight")
        assertGradient(db, numericGradient(b) { f(x, w, $0) }, "dBias")
    }

    // MARK: - Activations

    func testSwiGLUBackwardMatchesFiniteDifferences() {
        var rng = Rng(s: 6)
        let n = 40
        let a = rng.array(n, 4), b = rng.array(n, 2), r = rng.array(n)
        func f(_ a: [Float], _ b: [Float]) -> Double {
            var out = zeros(n)
            swigluForward(out: &out, a: a, b: b, n: n)
            return project(out, r)
        }
        var da = zeros(n), db = zeros(n)
        swigluBackward(dA: &da, dB: &db, dOut: r, a: a, b: b, n: n)
        assertGradient(da, numericGradient(a) { f($0, b) }, "dA")
        assertGradient(db, numericGradient(b) { f(a, $0) }, "dB")
    }

    func testGELUBackwardMatchesFiniteDifferences() {
        var rng = Rng(s: 7)
        let n = 40
        let x = rng.array(n, 4), r = rng.array(n)
        var dx = zeros(n)
        geluBackward(dInp: &dx, dOut: r, inp: x, n: n)
        assertGradient(dx, numericGradient(x) { var y = $0; geluInPlace(&y, n); return project(y, r) }, "dInp")
    }

    func testQuickGELUBackwardMatchesFiniteDifferences() {
        var rng = Rng(s: 8)
        let n = 40
        let x = rng.array(n, 4), r = rng.array(n)
        var dx = zeros(n)
        quickGeluBackward(dInp: &dx, dOut: r, inp: x, n: n)
        assertGradient(dx, numericGradient(x) { var y = $0; quickGeluInPlace(&y, n); return project(y, r) }, "dInp")
    }

    // MARK: - RoPE

    func testRoPEBackwardMatchesFiniteDifferences() {
        var rng = Rng(s: 9)
        let T = 4, H = 4, hd = 8, start = 3
        let table = RopeTable(headDim: hd, maxPos: 16, theta: 10000)
        let x = rng.array(T * H * hd), r = rng.array(T * H * hd)
        var dx = r
        ropeBackward(&dx, T: T, nHeads: H, headDim: hd, startPos: start, table: table)
        let numeric = numericGradient(x) {
            var y = $0
            ropeForward(&y, T: T, nHeads: H, headDim: hd, startPos: start, table: table)
            return project(y, r)
        }
        assertGradient(dx, numeric, "dx")
    }

    func testRoPEBackwardUndoesTheForwardRotation() {
        var rng = Rng(s: 10)
        let T = 3, H = 2, hd = 8
        let table = RopeTable(headDim: hd, maxPos: 8, theta: 10000)
        let x = rng.array(T * H * hd)
        var y = x
        ropeForward(&y, T: T, nHeads: H, headDim: hd, startPos: 2, table: table)
        ropeBackward(&y, T: T, nHeads: H, headDim: hd, startPos: 2, table: table)
        for i in 0..<x.count { XCTAssertEqual(y[i], x[i], accuracy: 1e-5) }
    }

    // MARK: - Attention

    private let T = 5, nHeads = 4, nKV = 2, hd = 8

    /// The recording forward (`attentionForward` with a record) over T positions from position 0.
    private func attention(_ q: [Float], _ k: [Float], _ v: [Float], T: Int? = nil) -> (out: [Float], probs: [Float]) {
        let T = T ?? self.T
        var out = zeros(T * nHeads * hd), probs = zeros(nHeads * T * T)
        let dim = nHeads * hd, kvDim = nKV * hd
        out.withUnsafeMutableBufferPointer { o in probs.withUnsafeMutableBufferPointer { p in
            attentionForward(out: o.baseAddress!, outStride: dim, q: q, qStride: dim, keys: k, values: v, kvStride: kvDim,
                             T: T, keyCount: T, mask: .causal(startPos: 0), nHeads: nHeads, nKVHeads: nKV, headDim: hd,
                             record: AttentionRecord(probs: p.baseAddress!, promptProbs: nil))
        } }
        return (out, probs)
    }

    func testRecordingAttentionForwardMatchesTheDecodingKernelPerPosition() {
        // T = 20 takes the GEMM path of the shared forward; the reference is the per-position SIMD kernel.
        let T = 20
        var rng = Rng(s: 11)
        let dim = nHeads * hd, kvDim = nKV * hd
        let q = rng.array(T * dim), k = rng.array(T * kvDim), v = rng.array(T * kvDim)
        let (out, probs) = attention(q, k, v, T: T)
        var scores = zeros(T), ref = zeros(hd)
        for t in 0..<T {
            for h in 0..<nHeads {
                let kvh = h / (nHeads / nKV)
                q.withUnsafeBufferPointer { qp in k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in
                    attendHead(q: qp.baseAddress! + t * dim + h * hd, keys: kp.baseAddress! + kvh * hd, values: vp.baseAddress! + kvh * hd,
                               count: t + 1, headDim: hd, stride: kvDim, scale: 1 / Float(hd).squareRoot(), scores: &scores, out: &ref)
                } } }
                for i in 0..<hd { XCTAssertEqual(out[t * dim + h * hd + i], ref[i], accuracy: 1e-5) }
                for j in 0..<T {
                    XCTAssertEqual(probs[(h * T + t) * T + j], j <= t ? scores[j] : 0, accuracy: 1e-6)
                }
            }
        }
    }

    func testCausalAttentionBackwardMatchesFiniteDifferencesWithGroupedKVHeads() {
        var rng = Rng(s: 12)
        let dim = nHeads * hd, kvDim = nKV * hd
        let q = rng.array(T * dim), k = rng.array(T * kvDim), v = rng.array(T * kvDim), r = rng.array(T * dim)
        let probs = attention(q, k, v).probs
        var dq = zeros(T * dim), dk = zeros(T * kvDim), dv = zeros(T * kvDim)
        attentionBackward(dq: &dq, dk: &dk, dv: &dv, dOut: r, q: q, k: k, v: v, probs: probs,
                                T: T, nHeads: nHeads, nKVHeads: nKV, headDim: hd)
        assertGradient(dq, numericGradient(q) { project(attention($0, k, v).out, r) }, "dq")
        assertGradient(dk, numericGradient(k) { project(attention(q, $0, v).out, r) }, "dk")
        assertGradient(dv, numericGradient(v) { project(attention(q, k, $0).out, r) }, "dv")
    }

    private let L = 3

    /// base + the gated prompt part of the shared `attentionForward`; returns (out, probs). The sequence's own
    /// values are zero, so its causal part contributes nothing and every gradient comes from the prompt.
    private func promptAttention(_ base: [Float], _ q: [Float], _ kp: [Float], _ vp: [Float], _ gate: [Float],
                                 _ newGate: Float) -> (out: [Float], probs: [Float]) {
        let dim = nHeads * hd, kvDim = nKV * hd
        var out = zeros(T * dim), probs = zeros(nHeads * T * T), promptProbs = zeros(nHeads * T * L)
        let keys = (0..<(T * kvDim)).map { Float($0 % 7) * 0.1 }, values = zeros(T * kvDim)
        let gates = gate.map { adaptionGate($0, newGate: newGate, promptLength: L) }
        out.withUnsafeMutableBufferPointer { o in probs.withUnsafeMutableBufferPointer { p in promptProbs.withUnsafeMutableBufferPointer { pp in
            kp.withUnsafeBufferPointer { kpp in vp.withUnsafeBufferPointer { vpp in gates.withUnsafeBufferPointer { g in
                attentionForward(out: o.baseAddress!, outStride: dim, q: q, qStride: dim, keys: keys, values: values, kvStride: kvDim,
                                 T: T, keyCount: T, mask: .causal(startPos: 0), nHeads: nHeads, nKVHeads: nKV, headDim: hd,
                                 prompt: GatedPrompt(keys: kpp.baseAddress!, values: vpp.baseAddress!, length: L, gates: g.baseAddress!),
                                 record: AttentionRecord(probs: p.baseAddress!, promptProbs: pp.baseAddress!))
            } } }
        } } }
        return (zip(out, base).map { $0 + $1 }, promptProbs)
    }

    func testAdaptionPromptAttentionBackwardMatchesFiniteDifferencesForQueryPromptAndGates() {
        var rng = Rng(s: 13)
        let dim = nHeads * hd, kvDim = nKV * hd
        let base = rng.array(T * dim), q = rng.array(T * dim, 2), kp = rng.array(L * kvDim, 2), vp = rng.array(L * kvDim)
        let gate = rng.array(nHeads), newGate: Float = 0.7, r = rng.array(T * dim)
        let probs = promptAttention(base, q, kp, vp, gate, newGate).probs
        var dq = zeros(T * dim), dkp = zeros(L * kvDim), dvp = zeros(L * kvDim), dg = zeros(nHeads), dng: Float = 0
        adaptionPromptAttentionBackward(dq: &dq, dPromptKeys: &dkp, dPromptValues: &dvp, dGate: &dg, dNewGate: &dng, dOut: r,
                                        q: q, promptKeys: kp, promptValues: vp, probs: probs, gate: gate, newGate: newGate,
                                        T: T, L: L, nHeads: nHeads, nKVHeads: nKV, headDim: hd)
        assertGradient(dq, numericGradient(q) { project(promptAttention(base, $0, kp, vp, gate, newGate).out, r) }, "dq")
        assertGradient(dkp, numericGradient(kp) { project(promptAttention(base, q, $0, vp, gate, newGate).out, r) }, "dPromptKeys")
        assertGradient(dvp, numericGradient(vp) { project(promptAttention(base, q, kp, $0, gate, newGate).out, r) }, "dPromptValues")
        assertGradient(dg, numericGradient(gate) { project(promptAttention(base, q, kp, vp, $0, newGate).out, r) }, "dGate")
        assertGradient([dng], numericGradient([newGate]) { project(promptAttention(base, q, kp, vp, gate, $0[0]).out, r) }, "dNewGate")
    }

    func testZeroGatesLeaveTheOutputAloneAndGiveGradientOnlyToTheGates() {
        var rng = Rng(s: 14)
        let dim = nHeads * hd, kvDim = nKV * hd
        let base = rng.array(T * dim), q = rng.array(T * dim), kp = rng.array(L * kvDim), vp = rng.array(L * kvDim)
        let gate = zeros(nHeads), r = rng.array(T * dim)
        let (out, probs) = promptAttention(base, q, kp, vp, gate, 1)
        XCTAssertEqual(out, base)
        var dq = zeros(T * dim), dkp = zeros(L * kvDim), dvp = zeros(L * kvDim), dg = zeros(nHeads)
        adaptionPromptAttentionBackward(dq: &dq, dPromptKeys: &dkp, dPromptValues: &dvp, dGate: &dg, dNewGate: nil, dOut: r,
                                        q: q, promptKeys: kp, promptValues: vp, probs: probs, gate: gate,
                                        T: T, L: L, nHeads: nHeads, nKVHeads: nKV, headDim: hd)
        XCTAssertEqual(dq, zeros(T * dim))
        XCTAssertEqual(dkp, zeros(L * kvDim))
        XCTAssertEqual(dvp, zeros(L * kvDim))
        assertGradient(dg, numericGradient(gate) { project(promptAttention(base, q, kp, vp, $0, 1).out, r) }, "dGate")
    }

    // MARK: - Loss

    func testCrossEntropyGradientMatchesFiniteDifferencesAndSkipsIgnoredRows() {
        var rng = Rng(s: 15)
        let V = 11
        let targets = [3, 0, 7, 10, 0]
        let logits = rng.array(targets.count * V, 3)
        var d = zeros(logits.count)
        let loss = crossEntropyForwardBackward(logits: logits, targets: targets, V: V, dLogits: &d)
        // Mean of −log softmax over the three labelled rows, computed here in Double.
        var expected: Double = 0
        for (t, y) in targets.enumerated() where y != 0 {
            let row = logits[(t * V)..<((t + 1) * V)].map(Double.init)
            let m = row.max()!
            expected += m + log(row.map { exp($0 - m) }.reduce(0, +)) - row[y]
        }
        XCTAssertEqual(Double(loss), expected / 3, accuracy: 1e-5)
        XCTAssertEqual(Array(d[V..<(2 * V)]), zeros(V))
        XCTAssertEqual(Array(d[(4 * V)...]), zeros(V))
        let numeric = numericGradient(logits) {
            Double(crossEntropyForwardBackward(logits: $0, targets: targets, V: V, dLogits: nil))
        }
        assertGradient(d, numeric, "dLogits")
    }

    func testCrossEntropyMayWriteItsGradientOverTheLogits() {
        var rng = Rng(s: 16)
        let V = 11, targets = [1, 2, 0, 4]
        let logits = rng.array(targets.count * V)
        var separate = zeros(logits.count)
        let l1 = crossEntropyForwardBackward(logits: logits, targets: targets, V: V, dLogits: &separate)
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: logits.count)
        defer { buf.deallocate() }
        buf.initialize(from: logits, count: logits.count)
        let l2 = crossEntropyForwardBackward(logits: buf, targets: targets, V: V, dLogits: buf)
        XCTAssertEqual(l1, l2)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: buf, count: logits.count)), separate)
    }

    func testCrossEntropyWithEveryTargetIgnoredIsZeroWithZeroGradient() {
        let V = 11
        var d = [Float](repeating: 1, count: 2 * V)
        let loss = crossEntropyForwardBackward(logits: [Float](repeating: 0.5, count: 2 * V), targets: [0, 0], V: V, dLogits: &d)
        XCTAssertEqual(loss, 0)
        XCTAssertEqual(d, zeros(2 * V))
    }

    // MARK: - Accumulation

    /// Calls `backward` twice on zeroed buffers and checks each buffer holds twice its first value.
    private func assertAccumulates(_ sizes: [Int], _ name: String, _ backward: ([UnsafeMutablePointer<Float>]) -> Void) {
        let bufs = sizes.map { n -> UnsafeMutablePointer<Float> in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: n); p.initialize(repeating: 0, count: n); return p
        }
        defer { bufs.forEach { $0.deallocate() } }
        backward(bufs)
        let once = zip(bufs, sizes).map { Array(UnsafeBufferPointer(start: $0, count: $1)) }
        backward(bufs)
        for (i, (p, n)) in zip(bufs, sizes).enumerated() {
            XCTAssertTrue(once[i].contains { $0 != 0 }, "\(name) buffer \(i) stayed zero")
            for j in 0..<n { XCTAssertEqual(p[j], 2 * once[i][j], accuracy: 1e-5 * max(1, abs(once[i][j])), "\(name) buffer \(i)") }
        }
    }

    func testBackwardKernelsAccumulateIntoTheirGradientBuffers() throws {
        var rng = Rng(s: 17)
        let Tn = 4, K = 16, N = 12
        let x = rng.array(Tn * K), w = rng.array(N * K), r = rng.array(Tn * N), rc = rng.array(Tn * K)
        let w16 = Tensor(uninitialized: [N, K], dtype: .f16)
        try quantize(dtype: .f16, src: w, dst: w16.mutableData, count: N * K)
        assertAccumulates([Tn * K, N * K, N], "linear") { b in
            linearBackward(dInp: b[0], dWeight: b[1], dBias: b[2], dOut: r, inp: x, weight: Tensor(w, shape: [N, K]), T: Tn)
        }
        assertAccumulates([Tn * K], "linear f16") { b in
            linearBackward(dInp: b[0], dWeight: nil, dBias: nil, dOut: r, inp: nil, weight: w16, T: Tn)
        }
        let nw = rng.array(K), nb = rng.array(K), gateIn = rng.array(Tn * K)
        assertAccumulates([Tn * K, K], "rmsnorm") { b in
            rmsnormBackward(dInp: b[0], dWeight: b[1], dOut: rc, inp: x, weight: nw, T: Tn, C: K, eps: 1e-5)
        }
        assertAccumulates([Tn * K, K, K], "layernorm") { b in
            layerNormBackward(dInp: b[0], dWeight: b[1], dBias: b[2], dOut: rc, inp: x, weight: nb, T: Tn, C: K, eps: 1e-5)
        }
        assertAccumulates([Tn * K, Tn * K], "swiglu") { b in swigluBackward(dA: b[0], dB: b[1], dOut: rc, a: x, b: gateIn, n: Tn * K) }
        assertAccumulates([Tn * K], "gelu") { b in geluBackward(dInp: b[0], dOut: rc, inp: x, n: Tn * K) }
        assertAccumulates([Tn * K], "quickgelu") { b in quickGeluBackward(dInp: b[0], dOut: rc, inp: x, n: Tn * K) }

        let dim = nHeads * hd, kvDim = nKV * hd
        let q = rng.array(T * dim), k = rng.array(T * kvDim), v = rng.array(T * kvDim), ro = rng.array(T * dim)
        let probs = attention(q, k, v).probs
        assertAccumulates([T * dim, T * kvDim, T * kvDim], "attention") { b in
            attentionBackward(dq: b[0], dk: b[1], dv: b[2], dOut: ro, q: q, k: k, v: v, probs: probs,
                                    T: T, nHeads: nHeads, nKVHeads: nKV, headDim: hd)
        }
        let kp = rng.array(L * kvDim), vp = rng.array(L * kvDim), gate = rng.array(nHeads)
        let pp = promptAttention(zeros(T * dim), q, kp, vp, gate, 0.5).probs
        assertAccumulates([T * dim, L * kvDim, L * kvDim, nHeads, 1], "prompt attention") { b in
            adaptionPromptAttentionBackward(dq: b[0], dPromptKeys: b[1], dPromptValues: b[2], dGate: b[3], dNewGate: b[4], dOut: ro,
                                            q: q, promptKeys: kp, promptValues: vp, probs: pp, gate: gate, newGate: 0.5,
                                            T: T, L: L, nHeads: nHeads, nKVHeads: nKV, headDim: hd)
        }
    }
}
