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
    default:
        dequantize(dtype: dtype, src: src, dst: dst, count: count)
    }
}

/// Converts f32 values to IEEE half floats with round-to-nearest-even.
public func convertToHalf(src: UnsafePointer<Float>, dst: UnsafeMutablePointer<UInt16>, count: Int) {
    ck_f32_to_f16(src, dst, count)
}

/// Dequantizes block-quantized data; the quantized formats arrive with the GGUF issue.
public func dequantize(dtype: DType, src: UnsafeRawPointer, dst: UnsafeMutablePointer<Float>, count: Int) {
    fatalError("dequantization of \(dtype) is not implemented yet")
}
