// Reference (scalar) dequantizers and quantizers for ggml's block formats.
//
// These follow ggml's `dequantize_row_*` and `quantize_row_*_ref` (ggml/src/ggml-quants.c, block structs in
// ggml/src/ggml-common.h) operation for operation, so results are bit-identical to ggml's scalar code and to
// gguf-py's numpy port: same float operations in the same order, no fused multiply-adds (Swift never
// contracts `a * b + c`), the same half-float rounding. They serve loading, conversion and tests; the decoding
// hot path uses fused SIMD kernels instead.
//
// Multi-byte fields are read byte by byte as little-endian because blocks of 18, 20, 34 or 210 bytes leave
// them unaligned, and GGUF is little-endian whatever the host.

/// IEEE half (binary16) bits to f32; exact for every input, NaN payloads kept.
@inline(__always)
private func halfToFloat(_ h: UInt16) -> Float {
    let sign: UInt32 = UInt32(h & 0x8000) << 16
    let exponent = UInt32((h >> 10) & 0x1F)
    let mantissa = UInt32(h & 0x3FF)
    if exponent == 0x1F {
        return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
    }
    if exponent == 0 {
        // Zero or subnormal: mantissa * 2^-24, exact in f32.
        let magnitude = Float(mantissa) * 0x1p-24
        return sign != 0 ? -magnitude : magnitude
    }
    return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
}

/// f32 to IEEE half bits, round to nearest even, overflow to infinity, NaN to a quiet NaN: a port of ggml's
/// portable `fp32_to_fp16` (from the FP16 library), which is what `GGML_FP32_TO_FP16` computes on every CPU
/// (F16C's `vcvtps2ph` rounds the same way), so block scales come out bit-identical.
@inline(__always)
private func floatToHalf(_ f: Float) -> UInt16 {
    let scaleToInf: Float = 0x1.0p+112
    let scaleToZero: Float = 0x1.0p-110
    var base = (abs(f) * scaleToInf) * scaleToZero
    let w = f.bitPattern
    let shl1W = w &+ w
    let sign = w & 0x8000_0000
    var bias = shl1W & 0xFF00_0000
    if bias < 0x7100_0000 { bias = 0x7100_0000 }
    base = Float(bitPattern: (bias >> 1) &+ 0x0780_0000) + base
    let bits = base.bitPattern
    let expBits = (bits >> 13) & 0x0000_7C00
    let mantissaBits = bits & 0x0000_0FFF
    let nonsign = expBits &+ mantissaBits
    return UInt16(truncatingIfNeeded: (sign >> 16) | (shl1W > 0xFF00_0000 ? 0x7E00 : nonsign))
}

/// f32 to bfloat16 bits as ggml's `ggml_compute_fp32_to_bf16` (and PyTorch) do: NaN forced quiet, else round
/// to nearest even on the dropped 16 bits.
@inline(__always)
private func floatToBF16(_ f: Float) -> UInt16 {
    let u = f.bitPattern
    if (u & 0x7FFF_FFFF) > 0x7F80_0000 {
        return UInt16(truncatingIfNeeded: (u >> 16) | 64)
    }
    return UInt16(truncatingIfNeeded: (UInt64(u) + UInt64(0x7FFF + ((u >> 16) & 1))) >> 16)
}

/// Little-endian u16 at byte `i` of `p`.
@inline(__always)
private func le16(_ p: UnsafePointer<UInt8>, _ i: Int) -> UInt16 {
    UInt16(p[i]) | (UInt16(p[i + 1]) << 8)
}

/// Stores `v` little-endian at byte `i` of `p`.
@inline(__always)
private func store16(_ p: UnsafeMutablePointer<UInt8>, _ i: Int, _ v: UInt16) {
    p[i] = UInt8(truncatingIfNeeded: v)
    p[i + 1] = UInt8(truncatingIfNeeded: v >> 8)
}

/// C's `(int8_t)(float)` as compiled for x86-64 (cvttss2si to int32, keep the low byte), so NaN or
/// out-of-range inputs give ggml's bytes instead of trapping as Swift's `Int8(_:)` would. Finite in-range
/// values truncate toward zero like C.
@inline(__always)
private func cTruncToInt8(_ v: Float) -> Int8 {
    let wide: Int32
    if v.isNaN || v >= 2147483648.0 || v < -2147483648.0 {
        wide = Int32.min
    } else {
        wide = Int32(v)
    }
    return Int8(truncatingIfNeeded: wide)
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..<8) from the 12 packed bytes `q`
/// of a Q4_K/Q5_K block. Sub-blocks 0-3 sit in the low 6 bits of bytes 0-7; 4-7 take their low nibbles from
/// bytes 8-11 and their top 2 bits from the spare high bits of bytes 0-7.
@inline(__always)
private func scaleMinK4(_ j: Int, _ q: UnsafePointer<UInt8>) -> (scale: UInt8, min: UInt8) {
    if j < 4 {
        return (q[j] & 63, q[j + 4] & 63)
    }
    return ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
}

/// Dequantizes `count` elements of block-quantized `dtype` stored at `src` into f32 at `dst`, exactly as
/// ggml's `dequantize_row_*` (ggml-quants.c): q8_0, q4_0, q4_1, q4_K, q5_K, q6_K. Plain types (f32, f16,
/// bf16) are forwarded to `convertToFloat`. `count` must be a multiple of the type's block size (tensor
/// shapes guarantee it).
public func dequantize(dtype: DType, src: UnsafeRawPointer, dst: UnsafeMutablePointer<Float>, count: Int) {
    precondition(count >= 0 && count % dtype.blockSize == 0,
                 "dequantize: \(count) elements is not a whole number of \(dtype.rawValue) blocks")
    let bytes = src.assumingMemoryBound(to: UInt8.self)
    let blocks = count / dtype.blockSize
    switch dtype {
    case .f32, .f16, .bf16:
        convertToFloat(dtype: dtype, src: src, dst: dst, count: count)
    case .q8_0:
        // block_q8_0 { f16 d; i8 qs[32] }: x = q * d.
        for i in 0..<blocks {
            let b = bytes + i * 34
            let d = halfToFloat(le16(b, 0))
            let y = dst + i * 32
            for j in 0..<32 { y[j] = Float(Int8(bitPattern: b[2 + j])) * d }
        }
    case .q4_0:
        // block_q4_0 { f16 d; u8 qs[16] }: low nibbles are elements 0-15, high nibbles 16-31; x = (q-8)*d.
        for i in 0..<blocks {
            let b = bytes + i * 18
            let d = halfToFloat(le16(b, 0))
            let y = dst + i * 32
            for j in 0..<16 {
                let q = b[2 + j]
                y[j] = Float(Int(q & 0x0F) - 8) * d
                y[j + 16] = Float(Int(q >> 4) - 8) * d
            }
        }
    case .q4_1:
        // block_q4_1 { f16 d; f16 m; u8 qs[16] }: same nibble order; x = q*d + m (two roundings, no FMA).
        for i in 0..<blocks {
            let b = bytes + i * 20
            let d = halfToFloat(le16(b, 0))
            let m = halfToFloat(le16(b, 2))
            let y = dst + i * 32
            for j in 0..<16 {
                let q = b[4 + j]
                y[j] = Float(q & 0x0F) * d + m
                y[j + 16] = Float(q >> 4) * d + m
            }
        }
    case .q4_K:
        // block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }. Each 64-element chunk uses 32 bytes of
        // qs: low nibbles are sub-block 2c, high nibbles sub-block 2c+1; x = (d*sc)*q - (dmin*m).
        for i in 0..<blocks {
            let b = bytes + i * 144
            let d = halfToFloat(le16(b, 0))
            let dmin = halfToFloat(le16(b, 2))
            let scales = b + 4
            var q = b + 16
            var y = dst + i * 256
            for chunk in 0..<4 {
                let (sc1, m1b) = scaleMinK4(2 * chunk, scales)
                let (sc2, m2b) = scaleMinK4(2 * chunk + 1, scales)
                let d1 = d * Float(sc1), m1 = dmin * Float(m1b)
                let d2 = d * Float(sc2), m2 = dmin * Float(m2b)
                for l in 0..<32 { y[l] = d1 * Float(q[l] & 0xF) - m1 }
                for l in 0..<32 { y[32 + l] = d2 * Float(q[l] >> 4) - m2 }
                q += 32
                y += 64
            }
        }
    case .q5_K:
        // block_q5_K { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }: like Q4_K plus a fifth bit;
        // sub-block s takes bit s of qh[l] (worth 16).
        for i in 0..<blocks {
            let b = bytes + i * 176
            let d = halfToFloat(le16(b, 0))
            let dmin = halfToFloat(le16(b, 2))
            let scales = b + 4
            let qh = b + 16
            var ql = b + 48
            var y = dst + i * 256
            var u1: UInt8 = 1, u2: UInt8 = 2
            for chunk in 0..<4 {
                let (sc1, m1b) = scaleMinK4(2 * chunk, scales)
                let (sc2, m2b) = scaleMinK4(2 * chunk + 1, scales)
                let d1 = d * Float(sc1), m1 = dmin * Float(m1b)
                let d2 = d * Float(sc2), m2 = dmin * Float(m2b)
                for l in 0..<32 {
                    y[l] = d1 * Float(Int(ql[l] & 0xF) + (qh[l] & u1 != 0 ? 16 : 0)) - m1
                }
                for l in 0..<32 {
                    y[32 + l] = d2 * Float(Int(ql[l] >> 4) + (qh[l] & u2 != 0 ? 16 : 0)) - m2
                }
                ql += 32
                y += 64
                u1 <<= 2
                u2 <<= 2
            }
        }
    case .q6_K:
        // block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d } (d last). Per 128-element half, l < 32:
        // four 6-bit values from ql[l], ql[l+32] nibbles and 2-bit fields of qh[l]; x = (d*sc)*(q-32).
        for i in 0..<blocks {
            let b = bytes + i * 210
            let d = halfToFloat(le16(b, 208))
            var ql = b
            var qh = b + 128
            var sc = b + 192
            var y = dst + i * 256
            for _ in 0..<2 {
                for l in 0..<32 {
                    let s = l / 16
                    let q1 = Int((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32
                    let q2 = Int((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32
                    let q3 = Int((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32
                    let q4 = Int((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32
                    y[l] = d * Float(Int8(bitPattern: sc[s])) * Float(q1)
                    y[l + 32] = d * Float(Int8(bitPattern: sc[s + 2])) * Float(q2)
                    y[l + 64] = d * Float(Int8(bitPattern: sc[s + 4])) * Float(q3)
                    y[l + 96] = d * Float(Int8(bitPattern: sc[s + 6])) * Float(q4)
                }
                y += 128
                ql += 64
                qh += 32
                sc += 8
            }
        }
    }
}

/// Quantizes `count` f32 values at `src` into `dtype` blocks at `dst` (which must hold
/// `dtype.byteCount(elements: count)` bytes), bit-identical to ggml's reference quantizers
/// `quantize_row_q8_0_ref`, `quantize_row_q4_0_ref` and `quantize_row_q4_1_ref` (what `llama-quantize` writes
/// without an importance matrix, and what gguf-py reproduces). f16 and bf16 round to nearest even; f32 copies.
/// Throws `AdapterError.unsupported` for the K-quants, whose reference quantizers run an iterative scale
/// search we do not reproduce, and `invalidArgument` when `count` is not a whole number of blocks.
public func quantize(dtype: DType, src: UnsafePointer<Float>, dst: UnsafeMutableRawPointer, count: Int) throws {
    guard count >= 0, count % dtype.blockSize == 0 else {
        throw AdapterError.invalidArgument("cannot quantize \(count) values to \(dtype.rawValue): not a multiple of its block size \(dtype.blockSize)")
    }
    let out = dst.assumingMemoryBound(to: UInt8.self)
    let blocks = count / dtype.blockSize
    switch dtype {
    case .f32:
        dst.copyMemory(from: src, byteCount: count * 4)
    case .f16:
        for i in 0..<count { store16(out, 2 * i, floatToHalf(src[i])) }
    case .bf16:
        for i in 0..<count { store16(out, 2 * i, floatToBF16(src[i])) }
    case .q8_0:
        for i in 0..<blocks {
            let x = src + i * 32
            let b = out + i * 34
            var amax: Float = 0
            // MAX(amax, fabsf(v)) is `a > b ? a : b`: keep that operand order so NaN behaves as in C.
            for j in 0..<32 { let a = abs(x[j]); amax = amax > a ? amax : a }
            let d = amax / 127
            let id: Float = d != 0 ? 1 / d : 0
            store16(b, 0, floatToHalf(d))
            for j in 0..<32 {
                // roundf: halves away from zero, which is Swift's default `rounded()`.
                b[2 + j] = UInt8(bitPattern: cTruncToInt8((x[j] * id).rounded()))
            }
        }
    case .q4_0:
        for i in 0..<blocks {
            let x = src + i * 32
            let b = out + i * 18
            // The signed value of largest magnitude (first one on ties) sets d = max / -8, so that value maps
            // to q = 0 and the other side gets the extra level.
            var amax: Float = 0, maxValue: Float = 0
            for j in 0..<32 where amax < abs(x[j]) {
                amax = abs(x[j])
                maxValue = x[j]
            }
            let d = maxValue / -8
            let id: Float = d != 0 ? 1 / d : 0
            store16(b, 0, floatToHalf(d))
            for j in 0..<16 {
                let x0 = x[j] * id
                let x1 = x[16 + j] * id
                let xi0 = UInt8(bitPattern: min(15, cTruncToInt8(x0 + 8.5)))
                let xi1 = UInt8(bitPattern: min(15, cTruncToInt8(x1 + 8.5)))
                b[2 + j] = xi0 | (xi1 << 4)
            }
        }
    case .q4_1:
        for i in 0..<blocks {
            let x = src + i * 32
            let b = out + i * 20
            var minValue = Float.greatestFiniteMagnitude
            var maxValue = -Float.greatestFiniteMagnitude
            for j in 0..<32 {
                if x[j] < minValue { minValue = x[j] }
                if x[j] > maxValue { maxValue = x[j] }
            }
            let d = (maxValue - minValue) / 15
            let id: Float = d != 0 ? 1 / d : 0
            store16(b, 0, floatToHalf(d))
            store16(b, 2, floatToHalf(minValue))
            for j in 0..<16 {
                let x0 = (x[j] - minValue) * id
                let x1 = (x[16 + j] - minValue) * id
                let xi0 = UInt8(bitPattern: min(15, cTruncToInt8(x0 + 0.5)))
                let xi1 = UInt8(bitPattern: min(15, cTruncToInt8(x1 + 0.5)))
                b[4 + j] = xi0 | (xi1 << 4)
            }
        }
    case .q4_K, .q5_K, .q6_K:
        throw AdapterError.unsupported("quantizing to \(dtype.rawValue) is not supported (only q8_0, q4_0, q4_1, f16, bf16)")
    }
}

/// Bits of the IEEE half nearest to `value` (round to nearest even, overflow to infinity), as ggml's
/// `GGML_FP32_TO_FP16`; scalar, for block scales and tests.
public func ggmlFloatToHalf(_ value: Float) -> UInt16 { floatToHalf(value) }

/// The f32 value of IEEE half bits (exact); scalar, for block scales and tests.
public func ggmlHalfToFloat(_ bits: UInt16) -> Float { halfToFloat(bits) }
