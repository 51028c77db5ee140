import AdapterCore

/// A value decoded by the restricted unpickler. Only data and a few allow-listed PyTorch objects can
/// appear: nothing is ever executed, and unknown classes are refused (or, in the opt-in TorchScript mode,
/// kept as inert `.object`s holding their state).
public indirect enum PickleValue {
    /// Python's `None`.
    case none
    /// `True` / `False`.
    case bool(Bool)
    /// An integer that fits in `Int`.
    case int(Int)
    /// An integer too large for `Int`: little-endian two's-complement bytes, as pickle stores them.
    case bigInt([UInt8])
    /// A Python float.
    case float(Double)
    /// A Python str (also Python 2 byte strings, decoded as UTF-8).
    case string(String)
    /// Python bytes.
    case bytes([UInt8])
    /// A tuple.
    case tuple([PickleValue])
    /// A list.
    case list([PickleValue])
    /// A set or frozenset, in pickle order.
    case set([PickleValue])
    /// A dict or OrderedDict, in insertion order.
    case dict([(key: PickleValue, value: PickleValue)])
    /// A reference to an allow-listed global that was not called (a dtype such as `torch.float16`, a
    /// storage class, a function passed as a value).
    case global(module: String, name: String)
    /// A PyTorch storage resolved through a persistent id.
    case storage(TorchStorage)
    /// A PyTorch tensor (`_rebuild_tensor_v2` and friends), not yet materialised.
    case tensor(TorchTensor)
    /// An instance of a class allowed as a generic object (TorchScript `__torch__.*` modules, or classes
    /// named in `PickleOptions.genericClasses`).
    case object(PickleObject)

    /// The value for string key `key` when this is a dict, else nil.
    public subscript(key: String) -> PickleValue? {
        guard case .dict(let entries) = self else { return nil }
        for e in entries { if case .string(let k) = e.key, k == key { return e.value } }
        return nil
    }

    /// The entries when this is a dict.
    public var dictEntries: [(key: PickleValue, value: PickleValue)]? {
        if case .dict(let e) = self { return e }
        return nil
    }

    /// The elements when this is a list, tuple or set.
    public var elements: [PickleValue]? {
        switch self {
        case .list(let a), .tuple(let a), .set(let a): return a
        default: return nil
        }
    }

    /// The string when this is a string.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The integer when this is an int (bools count as 0/1, as in Python).
    public var intValue: Int? {
        switch self {
        case .int(let v): return v
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    /// The tensor when this is one.
    public var tensorValue: TorchTensor? {
        if case .tensor(let t) = self { return t }
        return nil
    }

    /// A dict key rendered as a name: strings as they are, integers and other scalars in decimal.
    public var keyString: String {
        switch self {
        case .string(let s): return s
        case .int(let i): return String(i)
        case .bool(let b): return b ? "True" : "False"
        case .float(let d): return String(d)
        case .none: return "None"
        case .bytes(let b): return String(decoding: b, as: UTF8.self)
        case .global(let m, let n): return "\(m).\(n)"
        case .tuple(let items): return "(" + items.map(\.keyString).joined(separator: ", ") + ")"
        default: return "<\(kindName)>"
        }
    }

    /// A short name for the kind of value, for error messages.
    public var kindName: String {
        switch self {
        case .none: return "None"
        case .bool: return "bool"
        case .int, .bigInt: return "int"
        case .float: return "float"
        case .string: return "str"
        case .bytes: return "bytes"
        case .tuple: return "tuple"
        case .list: return "list"
        case .set: return "set"
        case .dict: return "dict"
        case .global(let m, let n): return "\(m).\(n)"
        case .storage: return "storage"
        case .tensor: return "tensor"
        case .object(let o): return o.className
        }
    }

    /// The value as metadata: containers recurse, tensors become nested lists of numbers when they hold at
    /// most `tensorElementLimit` elements and a `<tensor ...>` description otherwise.
    public func metadataValue(tensorElementLimit: Int = 65_536) -> MetadataValue {
        switch self {
        case .none: return .none
        case .bool(let b): return .bool(b)
        case .int(let i): return .int(i)
        case .bigInt(let b): return .string("<int of \(b.count) bytes>")
        case .float(let d): return .double(d)
        case .string(let s): return .string(s)
        case .bytes(let b): return .array(b.map { .int(Int($0)) })
        case .tuple(let a), .list(let a), .set(let a):
            return .array(a.map { $0.metadataValue(tensorElementLimit: tensorElementLimit) })
        case .dict(let entries):
            var d: [String: MetadataValue] = [:]
            for e in entries { d[e.key.keyString] = e.value.metadataValue(tensorElementLimit: tensorElementLimit) }
            return .dict(d)
        case .global(let m, let n): return .string("\(m).\(n)")
        case .storage(let s): return .string("<storage \(s.scalarType.rawValue) [\(s.count)]>")
        case .tensor(let t):
            if t.count <= tensorElementLimit { return t.listValue() }
            return .string("<tensor \(t.scalarType.rawValue) \(t.shape)>")
        case .object(let o):
            var d: [String: MetadataValue] = ["__class__": .string(o.className)]
            if !o.args.isEmpty { d["__args__"] = .array(o.args.map { $0.metadataValue(tensorElementLimit: tensorElementLimit) }) }
            if let s = o.state { d["__state__"] = s.metadataValue(tensorElementLimit: tensorElementLimit) }
            return .dict(d)
        }
    }
}

/// An inert instance of an allowed class: its name, constructor arguments and the state BUILD gave it.
public struct PickleObject {
    /// `module.name` of the class.
    public var className: String
    /// Arguments passed to NEWOBJ/REDUCE.
    public var args: [PickleValue]
    /// State set by BUILD (usually a dict of attributes), if any.
    public var state: PickleValue?

    /// Creates an object record.
    public init(className: String, args: [PickleValue], state: PickleValue?) {
        self.className = className
        self.args = args
        self.state = state
    }
}
