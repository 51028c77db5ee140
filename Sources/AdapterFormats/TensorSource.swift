import AdapterCore

/// Element type and shape of one stored tensor, known without reading its data.
public struct TensorInfo: Equatable, Sendable {
    /// Stored element type.
    public var dtype: DType
    /// Dimensions, outermost first (PyTorch order).
    public var shape: [Int]

    /// Creates an info record.
    public init(dtype: DType, shape: [Int]) {
        self.dtype = dtype
        self.shape = shape
    }
}

/// A non-tensor value stored in a weights file: configuration entries, integer buffers and the like.
public indirect enum MetadataValue: Equatable, Sendable {
    /// An integer.
    case int(Int)
    /// A floating-point number.
    case double(Double)
    /// A flag.
    case bool(Bool)
    /// Text.
    case string(String)
    /// A list, tuple or set; also a tensor converted to nested lists.
    case array([MetadataValue])
    /// A mapping with keys rendered as strings.
    case dict([String: MetadataValue])
    /// Python's `None`.
    case none

    /// The integer, if this is an `.int` (or a `.double` with an integral value).
    public var intValue: Int? {
        switch self {
        case .int(let v): return v
        case .double(let d): return d.rounded() == d && abs(d) < 9.0e18 ? Int(d) : nil
        default: return nil
        }
    }

    /// The number as a Double, if this is an `.int` or `.double`.
    public var doubleValue: Double? {
        switch self {
        case .int(let v): return Double(v)
        case .double(let d): return d
        default: return nil
        }
    }

    /// The flag, if this is a `.bool`.
    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    /// The text, if this is a `.string`.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The elements, if this is an `.array`.
    public var arrayValue: [MetadataValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// The entries, if this is a `.dict`.
    public var dictValue: [String: MetadataValue]? {
        if case .dict(let d) = self { return d }
        return nil
    }

    /// The entry for `key` when this is a `.dict`, else nil.
    public subscript(key: String) -> MetadataValue? {
        dictValue?[key]
    }
}

/// A lazily loaded dictionary of named tensors plus metadata: what every weights format exposes.
/// Opening a source reads only headers; `tensor(_:)` touches the data, as a view into a memory map where
/// the format allows.
public protocol TensorSource: AnyObject {
    /// Names of all tensors, sorted.
    var tensorNames: [String] { get }
    /// Element type and shape of `name`, or nil when there is no such tensor.
    func info(_ name: String) -> TensorInfo?
    /// The tensor `name`: a view of the mapped file where possible (no copy). Throws `AdapterError` naming
    /// the file and tensor when it is missing, unsupported or corrupt.
    func tensor(_ name: String) throws -> Tensor
    /// Non-tensor entries (configuration and the like).
    var metadata: [String: MetadataValue] { get }
}

extension TensorSource {
    /// True when a tensor called `name` exists.
    public func contains(_ name: String) -> Bool { info(name) != nil }
}
