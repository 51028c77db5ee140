import AdapterCore

extension Tensor {
    /// This matrix re-encoded as `dtype` (q8_0 or q4_0, ggml's reference quantizers), row by row in parallel.
    public func quantized(to dtype: DType, pool: ThreadPool = .shared) throws -> Tensor {
        guard shape.count == 2 else { throw AdapterError.shape("only matrices can be quantized, got shape \(shape)") }
        let rows = shape[0], cols = shape[1]
        guard cols % dtype.blockSize == 0 else {
            throw AdapterError.shape("cannot quantize a [\(rows), \(cols)] matrix to \(dtype.rawValue): \(cols) columns is not a multiple of \(dtype.blockSize)")
        }
        let out = Tensor(uninitialized: shape, dtype: dtype)
        let inRow = self.dtype.byteCount(elements: cols), outRow = dtype.byteCount(elements: cols)
        var failure: Error?
        pool.parallelFor(rows, minChunk: 16) { r in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: cols) { buf in
                for i in r {
                    convertToFloat(dtype: self.dtype, src: self.data + i * inRow, dst: buf.baseAddress!, count: cols)
                    do { try quantize(dtype: dtype, src: buf.baseAddress!, dst: out.mutableData + i * outRow, count: cols) } catch { failure = error }
                }
            }
        }
        if let failure { throw failure }
        return out
    }
}

extension LlamaWeights {
    /// The weights with every large matrix (attention, feed-forward, output; not the embedding table)
    /// re-encoded as `dtype`; norms stay f32. Used by `--quantize` for f16/f32 checkpoints.
    public func quantized(to dtype: DType) throws -> LlamaWeights {
        guard [.q8_0, .q4_0, .q4_1].contains(dtype) else {
            throw AdapterError.unsupported("--quantize supports q8_0, q4_0 and q4_1, not \(dtype.rawValue)")
        }
        var w = self
        for i in w.layers.indices {
            for m in LlamaLayerWeights.matrices { w.layers[i][keyPath: m] = try w.layers[i][keyPath: m].quantized(to: dtype) }
        }
        w.output = try output.quantized(to: dtype)
        return w
    }
}

extension LlamaWeights {
    /// The weights with every Q4_0/Q4_1/Q8_0 matrix (attention, feed-forward, output) carrying its panels repacked
    /// for the `--int8-activations` integer GEMM (`Tensor.packedForInt8`); the embedding table is only read by rows
    /// and stays as it is. Unchanged on CPUs without AVX-512 VNNI. `mappedOnly`: only matrices mapped from the file,
    /// whose pages are given back (a heap matrix, re-encoded by `--quantize`, would be held twice).
    public func packedForInt8(mappedOnly: Bool = false, pool: ThreadPool = .shared) -> LlamaWeights {
        var w = self
        let slots = LlamaLayerWeights.matrices
        let bytes = { (t: Tensor) in mappedOnly && !t.storage.isFileMapped ? 0 : t.int8PanelBytes }
        // One arena for all panels (64-byte aligned ranges), on huge pages: per-tensor huge allocations would each
        // round up to 2 MB (SmolLM2: 210 small matrices, 420 MB).
        let align = { (n: Int) in (n + 63) / 64 * 64 }
        let total = layers.reduce(0) { sum, l in slots.reduce(sum) { $0 + align(bytes(l[keyPath: $1])) } } + align(bytes(output))
        guard total > 0 else { return self }
        let arena = Storage(uninitializedBytes: total, hugePages: true)
        var offset = 0
        func pack(_ t: Tensor) -> Tensor {
            guard bytes(t) > 0 else { return t }
            let packed = t.packedForInt8(into: arena, at: offset, pool: pool)
            offset += align(t.int8PanelBytes)
            return packed
        }
        for i in w.layers.indices {
            for slot in slots { w.layers[i][keyPath: slot] = pack(w.layers[i][keyPath: slot]) }
        }
        w.output = pack(output)
        return w
    }
}
