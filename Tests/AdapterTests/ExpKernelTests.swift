import CKernels
import Foundation
import LlamaAdapter
import XCTest

/// The vector e^x and the kernels built on it (softmax, SwiGLU) against the C library and float64.
final class ExpKernelTests: XCTestCase {
    /// Inputs: a million float bit patterns spread over the whole range (both signs, subnormals, the overflow and
    /// underflow edges), plus the special values and the exact thresholds.
    private static func inputs() -> [Float] {
        var xs: [Float] = []
        var u: UInt64 = 0
        while u < (1 << 32) { xs.append(Float(bitPattern: UInt32(u))); u += 4099 }
        xs += [0, -0, .infinity, -.infinity, .nan, Float(bitPattern: 0x7fc0_1234), .leastNonzeroMagnitude,
               -.leastNonzeroMagnitude, 88, -88, 0x1.62e42ep6, 0x1.62e430p6, -0x1.9fe368p6, -0x1.9fe36ap6,
               0x1.04845ep+5, -0x1.f8cbb2p+5, -87.33655, -103.97, 1e-8, -1e-8]
        return xs
    }

    /// `ck_expf` is glibc's `expf` bit for bit on Linux (where the AVX-512 path mirrors glibc's FMA build; the two
    /// inputs it listed last are where an unfused reduction would round the other way); elsewhere within an ulp.
    func testVectorExpMatchesTheCLibraryBitForBit() {
        let xs = Self.inputs()
        var ys = [Float](repeating: 0, count: xs.count)
        ck_expf(xs, &ys, xs.count)
        var differ = 0
        for (x, y) in zip(xs, ys) {
            let ref = expf(x)
            if ref.isNaN { XCTAssert(y.isNaN, "e^\(x)"); continue }
            #if os(Linux)
            if ref.bitPattern != y.bitPattern { differ += 1; if differ < 5 { XCTFail("e^\(x): \(y) vs expf \(ref)") } }
            #else
            XCTAssertLessThanOrEqual(abs(Int64(ref.bitPattern) - Int64(y.bitPattern)), 1, "e^\(x)")
            #endif
        }
        XCTAssertEqual(differ, 0)
    }

    /// Kernel outputs against the scalar formula: the same bits on Linux (where e^x is glibc's), within 2 ulp elsewhere.
    private func assertScalarBits(_ got: [Float], _ ref: [Float], _ what: String) {
        for (i, (y, r)) in zip(got, ref).enumerated() {
            #if os(Linux)
            XCTAssertEqual(y.bitPattern, r.bitPattern, "\(what) i=\(i): \(y) vs \(r)")
            #else
            XCTAssertEqual(y, r, accuracy: 2 * r.ulp, "\(what) i=\(i)")
            #endif
        }
    }

    /// SwiGLU through the vector kernel gives the scalar formula's bits (on Linux), any length.
    func testSwiGLUKernelMatchesTheScalarFormula() {
        var rng = SeededGenerator(seed: 1)
        for n in [1, 15, 16, 17, 100, 1536] {
            let a = (0..<n).map { _ in Float.random(in: -30...30, using: &rng) }, b = (0..<n).map { _ in Float.random(in: -2...2, using: &rng) }
            var out = [Float](repeating: .nan, count: n)
            ck_swiglu(&out, a, b, n)
            assertScalarBits(out, (0..<n).map { a[$0] / (1 + expf(-a[$0])) * b[$0] }, "SwiGLU n=\(n)")
        }
    }

    /// QuickGELU through the vector kernel gives the scalar formula's bits (on Linux), any length.
    func testQuickGELUKernelMatchesTheScalarFormula() {
        var rng = SeededGenerator(seed: 2)
        for n in [1, 15, 16, 17, 4096] {
            let x = (0..<n).map { _ in Float.random(in: -60...60, using: &rng) }
            var y = x
            ck_quick_gelu(&y, n)
            assertScalarBits(y, x.map { $0 / (1 + expf(-1.702 * $0)) }, "QuickGELU n=\(n)")
        }
    }

    /// Softmax against float64, with masked (-inf) entries and lengths that leave partial vectors.
    func testSoftmaxMatchesFloat64() {
        var rng = SeededGenerator(seed: 0x5EED)
        for n in [1, 2, 15, 16, 17, 64, 257, 1000] {
            var x = (0..<n).map { _ in Float.random(in: -20...20, using: &rng) }
            if n > 2 { x[1] = -.infinity }
            let x0 = x, m = Double(x.max()!)
            let e = x.map { exp(Double($0) - m) }, s = e.reduce(0, +)
            ck_softmax(&x, n)
            // Float's own error: x − max rounds to half an ulp of |x − max| (an absolute error that e^ turns
            // relative), the sum of n terms in (at least) 8 lanes up to n/8 + 3 roundings, the rest a few more.
            for i in 0..<n {
                let bound = (7 + Double((n + 7) / 8) + abs(Double(x0[i]) - m)) * 0x1p-24 * e[i] / s
                XCTAssertEqual(Double(x[i]), e[i] / s, accuracy: bound, "n=\(n) i=\(i)")
            }
            XCTAssertEqual(x.reduce(0, +), 1, accuracy: 1e-5)
        }
    }
}
