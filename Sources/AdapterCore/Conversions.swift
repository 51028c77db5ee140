import CKernels

/// Converts `count` stored elements of `dtype` at `src` to f32 at `dst`.
public func convertToFloat(dtype: DType, src: UnsafeRawPointer, dst: UnsafeMutablePointer<Float>, count: Int) {
    switch dtype {
    case .f32:
        dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
    case .f16:
        ck_f16_to_f32(src.assumingMemoryBound(to: UInt16.self), dst, count)
    case .bf16:
        ck_bf16_to_f32(src.assumingMemoryBound(to: UInt16.self), dst, count)
    case .q4_0:
        ck_dequant_q4_0(src, dst, count)
    case .q4_1:
        ck_dequant_q4_1(src, dst, count)
    case .q8_0:
        ck_dequant_q8_0(src, dst, count)
    case .q4_K:
        ck_dequant_q4_K(src, dst, count)
    case .q5_K:
        ck_dequant_q5_K(src, dst, count)
    case .q6_K:
        ck_dequant_q6_K(src, dst, count)
    }
}

/// Converts f32 values to IEEE half floats with round-to-nearest-even.
public func convertToHalf(src: UnsafePointer<Float>, dst: UnsafeMutablePointer<UInt16>, count: Int) {
    ck_f32_to_f16(src, dst, count)
}
