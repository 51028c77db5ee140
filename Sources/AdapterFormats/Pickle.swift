import AdapterCore

/// What the restricted unpickler may build beyond plain data.
public struct PickleOptions: Sendable {
    /// Represent TorchScript `__torch__.*` classes as inert `PickleValue.object`s and accept the
    /// `torch.jit._pickle` helpers. Off for plain `.pth` checkpoints, which never contain them.
    public var allowTorchScriptObjects: Bool
    /// Extra `module.name` classes to keep as inert objects (for example `argparse.Namespace` in training
    /// checkpoints). Empty by default: official inference checkpoints need none.
    public var genericClasses: Set<String>
    /// Deepest container nesting accepted; deeper input is refused rather than risking the stack.
    public var maxDepth: Int
    /// Most values the decoded tree may expand to (shared sub-objects counted at every use), which keeps a
    /// small hostile pickle from producing an exponentially large structure.
    public var maxExpandedValues: Int

    /// Creates options; the defaults are those of `.checkpoint`.
    public init(allowTorchScriptObjects: Bool = false, genericClasses: Set<String> = [],
                maxDepth: Int = 256, maxExpandedValues: Int = 1 << 22) {
        self.allowTorchScriptObjects = allowTorchScriptObjects
        self.genericClasses = genericClasses
        self.maxDepth = maxDepth
        self.maxExpandedValues = maxExpandedValues
    }

    /// For `torch.save` checkpoints: data, tensors, OrderedDict, nothing else.
    public static let checkpoint = PickleOptions()
    /// For TorchScript archives (`data.pkl` pickles `__torch__.*` module objects).
    public static let torchScript = PickleOptions(allowTorchScriptObjects: true)
}

/// A restricted unpickler: a stack machine over pickle protocols 0-5 that builds `PickleValue`s. Globals
/// resolve only against an allow-list (PyTorch tensor rebuild functions, storage classes, dtypes,
/// `torch.Size`, `collections.OrderedDict`, `set`/`frozenset`, `_codecs.encode` for protocol-2 bytes);
/// anything else is refused with the global's name.
/// Nothing is ever executed: allowed callables are interpreted by this code, not looked up.
public final class Unpickler {
    /// Name used in error messages (usually the file path).
    public let source: String
    /// What may be built.
    public let options: PickleOptions
    /// Resolves persistent ids (PyTorch: `('storage', StorageClass, key, location, numel)`).
    public var persistentLoad: ((PickleValue) throws -> PickleValue)?

    /// Creates an unpickler.
    public init(source: String, options: PickleOptions = .checkpoint,
                persistentLoad: ((PickleValue) throws -> PickleValue)? = nil) {
        self.source = source
        self.options = options
        self.persistentLoad = persistentLoad
    }

    /// Decodes one pickle from `bytes` (up to STOP).
    public func load(_ bytes: UnsafeRawBufferPointer) throws -> PickleValue {
        var machine = Machine(unpickler: self, reader: ByteReader(bytes, context: "\(source): pickle"))
        defer { machine.tearDown() }
        return try machine.run()
    }

    /// Decodes one pickle from an array of bytes.
    public func load(_ bytes: [UInt8]) throws -> PickleValue {
        try bytes.withUnsafeBytes { try load($0) }
    }
}

// MARK: - Machine internals

/// Mutable containers while decoding: pickle fills lists and dicts after memoising them, so the memo must
/// hold references. They are turned into immutable `PickleValue`s at STOP.
final class Container {
    enum Kind { case list, tuple, set, dict, object }
    let kind: Kind
    var items: [Node] = []
    var keys: [Node] = []
    var keyIndex: [HashKey: Int] = [:]
    var className = ""
    var args: [Node] = []
    var state: Node? = nil

    init(_ kind: Kind, items: [Node] = []) {
        self.kind = kind
        self.items = items
    }
}

enum Node {
    case leaf(PickleValue)
    case box(Container)
}

/// Python-equality keys for dict entries, so SETITEM on an existing key replaces it as Python does.
indirect enum HashKey: Hashable {
    case none, int(Int), big([UInt8]), float(Double), string(String), bytes([UInt8])
    case tuple([HashKey]), global(String, String), identity(ObjectIdentifier)
}

/// Allow-listed globals, by what this code does with them.
enum AllowedGlobal {
    case orderedDict, set, frozenset
    case rebuildTensorV2, rebuildTensor, rebuildParameter, rebuildParameterWithState, rebuildFromTypeV2
    case storageClass, dtype, tensorClass, torchSize
    case jitIdentity
    case codecsEncode
    case genericClass
}

private let dtypeNames: Set<String> = [
    "float16", "float32", "float64", "bfloat16", "half", "float", "double", "int8", "int16", "int32",
    "int64", "uint8", "bool", "long", "int", "short", "complex32", "complex64", "complex128",
]

struct Machine {
    let unpickler: Unpickler
    var reader: ByteReader
    var stack: [Node] = []
    var metastack: [[Node]] = []
    var memo: [Int: Node] = [:]
    var containers: [Container] = []

    init(unpickler: Unpickler, reader: ByteReader) {
        self.unpickler = unpickler
        self.reader = reader
    }

    var source: String { unpickler.source }
    var options: PickleOptions { unpickler.options }

    func fail(_ message: String) -> AdapterError {
        .format("\(source): \(message) (pickle byte \(reader.position))")
    }

    /// Breaks every container's links before release so deeply nested input cannot exhaust the stack
    /// through recursive deallocation.
    mutating func tearDown() {
        for c in containers {
            c.items = []; c.keys = []; c.keyIndex = [:]; c.args = []; c.state = nil
        }
        containers = []
        stack = []
        metastack = []
        memo = [:]
    }

    mutating func make(_ kind: Container.Kind, items: [Node] = []) -> Container {
        let c = Container(kind, items: items)
        containers.append(c)
        return c
    }

    mutating func push(_ n: Node) { stack.append(n) }
    mutating func pushLeaf(_ v: PickleValue) { stack.append(.leaf(v)) }

    mutating func pop() throws -> Node {
        guard let n = stack.popLast() else { throw fail("stack underflow") }
        return n
    }

    mutating func popMark() throws -> [Node] {
        guard let outer = metastack.popLast() else { throw fail("MARK expected but none is open") }
        let items = stack
        stack = outer
        return items
    }

    func top() throws -> Node {
        guard let n = stack.last else { throw fail("stack underflow") }
        return n
    }

    // MARK: Main loop

    mutating func run() throws -> PickleValue {
        while true {
            let op = try reader.u8("opcode")
            switch op {
            case 0x80: // PROTO
                let proto = try reader.u8()
                guard proto <= 5 else { throw AdapterError.unsupported("\(source): pickle protocol \(proto) is not supported (at most 5)") }
            case 0x95: try reader.skip(8, "FRAME length") // FRAME: framing is only a read-ahead hint
            case 0x2E: // STOP
                let result = try pop()
                return try convertResult(result)
            case 0x28: metastack.append(stack); stack = [] // MARK
            case 0x30: // POP
                if stack.isEmpty { _ = try popMark() } else { stack.removeLast() }
            case 0x31: _ = try popMark() // POP_MARK
            case 0x32: push(try top()) // DUP
            case 0x4E: pushLeaf(.none)
            case 0x88: pushLeaf(.bool(true))
            case 0x89: pushLeaf(.bool(false))
            case 0x4A: pushLeaf(.int(Int(Int32(bitPattern: try reader.u32())))) // BININT
            case 0x4B: pushLeaf(.int(Int(try reader.u8()))) // BININT1
            case 0x4D: pushLeaf(.int(Int(try reader.u16()))) // BININT2
            case 0x8A: // LONG1
                let n = Int(try reader.u8())
                pushLeaf(Self.decodeLong(try reader.slice(n, "LONG1 bytes")))
            case 0x8B: // LONG4
                let n = Int(Int32(bitPattern: try reader.u32()))
                guard n >= 0 else { throw fail("negative LONG4 length") }
                pushLeaf(Self.decodeLong(try reader.slice(n, "LONG4 bytes")))
            case 0x47: // BINFLOAT: big-endian IEEE double
                let bits = UInt64(bigEndian: UInt64(littleEndian: try reader.u64()))
                pushLeaf(.float(Double(bitPattern: bits)))
            case 0x8C: pushLeaf(.string(try text(Int(try reader.u8())))) // SHORT_BINUNICODE
            case 0x58: pushLeaf(.string(try text(Int(try reader.u32())))) // BINUNICODE
            case 0x8D: pushLeaf(.string(try text(try length64()))) // BINUNICODE8
            case 0x43: pushLeaf(.bytes(Array(try reader.slice(Int(try reader.u8()))))) // SHORT_BINBYTES
            case 0x42: pushLeaf(.bytes(Array(try reader.slice(Int(try reader.u32()))))) // BINBYTES
            case 0x8E, 0x96: pushLeaf(.bytes(Array(try reader.slice(try length64())))) // BINBYTES8, BYTEARRAY8
            case 0x55: pushLeaf(.string(try text(Int(try reader.u8())))) // SHORT_BINSTRING (Python 2 str)
            case 0x54: // BINSTRING
                let n = Int(Int32(bitPattern: try reader.u32()))
                guard n >= 0 else { throw fail("negative BINSTRING length") }
                pushLeaf(.string(try text(n)))
            case 0x49: pushLeaf(try textInt(allowBool: true)) // INT
            case 0x4C: pushLeaf(try textInt(allowBool: false)) // LONG
            case 0x46: // FLOAT
                let line = String(decoding: try reader.line(), as: UTF8.self)
                guard let d = Double(line) else { throw fail("bad FLOAT literal") }
                pushLeaf(.float(d))
            case 0x53: pushLeaf(.string(try quotedString())) // STRING
            case 0x56: pushLeaf(.string(try rawUnicodeLine())) // UNICODE (protocol 0 str)
            case 0x5D: push(.box(make(.list))) // EMPTY_LIST
            case 0x7D: push(.box(make(.dict))) // EMPTY_DICT
            case 0x29: push(.box(make(.tuple))) // EMPTY_TUPLE
            case 0x8F: push(.box(make(.set))) // EMPTY_SET
            case 0x90: // ADDITEMS
                let items = try popMark()
                guard case .box(let c) = try top(), c.kind == .set else { throw fail("ADDITEMS target is not a set") }
                c.items.append(contentsOf: items)
            case 0x91: push(.box(make(.set, items: try popMark()))) // FROZENSET
            case 0x74: push(.box(make(.tuple, items: try popMark()))) // TUPLE
            case 0x85: // TUPLE1
                let a = try pop()
                push(.box(make(.tuple, items: [a])))
            case 0x86: // TUPLE2
                let b = try pop(), a = try pop()
                push(.box(make(.tuple, items: [a, b])))
            case 0x87: // TUPLE3
                let c = try pop(), b = try pop(), a = try pop()
                push(.box(make(.tuple, items: [a, b, c])))
            case 0x6C: push(.box(make(.list, items: try popMark()))) // LIST
            case 0x64: // DICT
                let items = try popMark()
                let d = make(.dict)
                try setItems(d, items)
                push(.box(d))
            case 0x61: // APPEND
                let v = try pop()
                guard case .box(let c) = try top(), c.kind == .list else { throw fail("APPEND target is not a list") }
                c.items.append(v)
            case 0x65: // APPENDS
                let items = try popMark()
                guard case .box(let c) = try top(), c.kind == .list else { throw fail("APPENDS target is not a list") }
                c.items.append(contentsOf: items)
            case 0x73: // SETITEM
                let v = try pop(), k = try pop()
                guard case .box(let d) = try top(), d.kind == .dict else { throw fail("SETITEM target is not a dict") }
                try setItems(d, [k, v])
            case 0x75: // SETITEMS
                let items = try popMark()
                guard case .box(let d) = try top(), d.kind == .dict else { throw fail("SETITEMS target is not a dict") }
                try setItems(d, items)
            case 0x63: // GLOBAL
                let module = String(decoding: try reader.line("GLOBAL module"), as: UTF8.self)
                let name = String(decoding: try reader.line("GLOBAL name"), as: UTF8.self)
                pushLeaf(try resolveGlobal(module, name))
            case 0x93: // STACK_GLOBAL
                guard case .leaf(.string(let name)) = try pop(), case .leaf(.string(let module)) = try pop() else {
                    throw fail("STACK_GLOBAL needs two strings")
                }
                pushLeaf(try resolveGlobal(module, name))
            case 0x52: // REDUCE
                let args = try pop(), callable = try pop()
                push(try reduce(callable, args))
            case 0x81: // NEWOBJ
                let args = try pop(), cls = try pop()
                push(try newObject(cls, args))
            case 0x92: // NEWOBJ_EX
                let kwargs = try pop(), args = try pop(), cls = try pop()
                if case .box(let k) = kwargs, k.kind == .dict, k.keys.isEmpty {} else {
                    throw fail("NEWOBJ_EX with keyword arguments is not supported")
                }
                push(try newObject(cls, args))
            case 0x62: // BUILD
                let state = try pop()
                try build(try top(), state)
            case 0x71: try put(Int(try reader.u8())) // BINPUT
            case 0x72: try put(Int(try reader.u32())) // LONG_BINPUT
            case 0x94: try put(memo.count) // MEMOIZE
            case 0x70: try put(try textIndex()) // PUT
            case 0x68: push(try get(Int(try reader.u8()))) // BINGET
            case 0x6A: push(try get(Int(try reader.u32()))) // LONG_BINGET
            case 0x67: push(try get(try textIndex())) // GET
            case 0x51: // BINPERSID
                push(try persistent(try pop()))
            case 0x50: // PERSID
                let pid = String(decoding: try reader.line(), as: UTF8.self)
                push(try persistent(.leaf(.string(pid))))
            default:
                throw AdapterError.unsupported("\(source): unsupported pickle opcode 0x\(String(op, radix: 16)) at byte \(reader.position - 1)")
            }
        }
    }

    // MARK: Scalars

    mutating func length64() throws -> Int {
        guard let n = try reader.u64("length").checkedInt else { throw reader.truncated("length") }
        return n
    }

    mutating func text(_ n: Int) throws -> String {
        String(decoding: try reader.slice(n, "string"), as: UTF8.self)
    }

    static func decodeLong(_ b: UnsafeRawBufferPointer) -> PickleValue {
        if b.isEmpty { return .int(0) }
        let negative = b[b.count - 1] & 0x80 != 0
        let fill: UInt8 = negative ? 0xFF : 0
        // Longer encodings still fit an Int when the extra bytes are only sign extension.
        if b.count > 8 {
            let signOK = b[8...].allSatisfy { $0 == fill } && ((b[7] & 0x80 != 0) == negative)
            if !signOK { return .bigInt(Array(b)) }
        }
        var v: UInt64 = negative ? ~0 : 0
        for i in (0..<min(8, b.count)).reversed() {
            v = (v << 8) | UInt64(b[i])
        }
        return .int(Int(Int64(bitPattern: v)))
    }

    mutating func textInt(allowBool: Bool) throws -> PickleValue {
        var s = String(decoding: try reader.line(), as: UTF8.self)
        if allowBool, s == "00" { return .bool(false) }
        if allowBool, s == "01" { return .bool(true) }
        if s.hasSuffix("L") { s.removeLast() }
        guard let v = Int(s) else { throw fail("integer literal '\(s.prefix(40))' is malformed or too large") }
        return .int(v)
    }

    mutating func textIndex() throws -> Int {
        let s = String(decoding: try reader.line(), as: UTF8.self)
        guard let v = Int(s), v >= 0 else { throw fail("bad memo index") }
        return v
    }

    /// Protocol-0 STRING: a quoted repr. Only the escape-free form is accepted; torch never writes it.
    mutating func quotedString() throws -> String {
        let line = Array(try reader.line())
        guard line.count >= 2, let q = line.first, q == line.last, q == 0x27 || q == 0x22, !line.contains(0x5C) else {
            throw AdapterError.unsupported("\(source): protocol-0 STRING with escapes is not supported")
        }
        return String(decoding: line[1..<(line.count - 1)], as: UTF8.self)
    }

    /// Protocol-0 UNICODE: a raw-unicode-escape line, i.e. Latin-1 bytes plus `\\uXXXX`/`\\UXXXXXXXX`
    /// escapes (pickle escapes backslash and newline that way).
    mutating func rawUnicodeLine() throws -> String {
        let line = Array(try reader.line())
        var scalars = String.UnicodeScalarView()
        var i = 0
        while i < line.count {
            let b = line[i]
            if b == 0x5C, i + 1 < line.count, line[i + 1] == 0x75 || line[i + 1] == 0x55 {
                let width = line[i + 1] == 0x75 ? 4 : 8
                guard i + 2 + width <= line.count,
                      let code = UInt32(String(decoding: line[(i + 2)..<(i + 2 + width)], as: UTF8.self), radix: 16),
                      let scalar = Unicode.Scalar(code) else { throw fail("bad escape in UNICODE string") }
                scalars.append(scalar)
                i += 2 + width
            } else {
                scalars.append(Unicode.Scalar(b))
                i += 1
            }
        }
        return String(scalars)
    }

    // MARK: Memo

    mutating func put(_ index: Int) throws {
        memo[index] = try top()
    }

    func get(_ index: Int) throws -> Node {
        guard let n = memo[index] else { throw fail("memo entry \(index) is missing") }
        return n
    }

    // MARK: Dicts

    func hashKey(_ n: Node, depth: Int = 0) throws -> HashKey {
        guard depth < options.maxDepth else { throw fail("dict key nested too deeply") }
        switch n {
        case .leaf(let v):
            switch v {
            case .none: return .none
            case .bool(let b): return .int(b ? 1 : 0)
            case .int(let i): return .int(i)
            case .bigInt(let b): return .big(b)
            case .float(let d): return d.rounded() == d && abs(d) < 9.0e18 ? .int(Int(d)) : .float(d)
            case .string(let s): return .string(s)
            case .bytes(let b): return .bytes(b)
            case .global(let m, let name): return .global(m, name)
            case .storage(let s): return .identity(ObjectIdentifier(s))
            default: throw fail("unhashable dict key of type \(v.kindName)")
            }
        case .box(let c):
            switch c.kind {
            case .tuple: return .tuple(try c.items.map { try hashKey($0, depth: depth + 1) })
            case .object: return .identity(ObjectIdentifier(c))
            default: throw fail("unhashable dict key (a mutable container)")
            }
        }
    }

    func setItems(_ d: Container, _ items: [Node]) throws {
        guard items.count % 2 == 0 else { throw fail("odd number of items for a dict") }
        var i = 0
        while i < items.count {
            let k = items[i], v = items[i + 1]
            let h = try hashKey(k)
            if let at = d.keyIndex[h] {
                d.items[at] = v
            } else {
                d.keyIndex[h] = d.keys.count
                d.keys.append(k)
                d.items.append(v)
            }
            i += 2
        }
    }

    // MARK: Globals

    func classify(_ module: String, _ name: String) -> AllowedGlobal? {
        switch (module, name) {
        case ("collections", "OrderedDict"): return .orderedDict
        case ("builtins", "set"), ("__builtin__", "set"): return .set
        case ("builtins", "frozenset"), ("__builtin__", "frozenset"): return .frozenset
        case ("torch._utils", "_rebuild_tensor_v2"): return .rebuildTensorV2
        case ("torch._utils", "_rebuild_tensor"): return .rebuildTensor
        case ("torch._utils", "_rebuild_parameter"): return .rebuildParameter
        case ("torch._utils", "_rebuild_parameter_with_state"): return .rebuildParameterWithState
        case ("torch._tensor", "_rebuild_from_type_v2"): return .rebuildFromTypeV2
        case ("torch", "Tensor"), ("torch._tensor", "Tensor"), ("torch.nn.parameter", "Parameter"): return .tensorClass
        case ("torch", "Size"): return .torchSize
        case ("_codecs", "encode"): return .codecsEncode
        default: break
        }
        if module == "torch", TorchScalarType(storageClass: name) != nil { return .storageClass }
        if module == "torch", dtypeNames.contains(name) { return .dtype }
        if options.allowTorchScriptObjects {
            if module == "torch.jit._pickle",
               ["build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "restore_type_tag"].contains(name) {
                return .jitIdentity
            }
            if module == "__torch__" || module.hasPrefix("__torch__.") { return .genericClass }
        }
        if options.genericClasses.contains("\(module).\(name)") { return .genericClass }
        return nil
    }

    func resolveGlobal(_ module: String, _ name: String) throws -> PickleValue {
        guard classify(module, name) != nil else {
            throw AdapterError.format("\(source): pickle refers to forbidden global '\(printable("\(module).\(name)"))'")
        }
        return .global(module: module, name: name)
    }

    func callee(_ n: Node, _ what: String) throws -> (String, String, AllowedGlobal) {
        guard case .leaf(.global(let m, let name)) = n, let kind = classify(m, name) else {
            throw fail("\(what) applied to something that is not an allowed global")
        }
        return (m, name, kind)
    }

    func tupleItems(_ n: Node, _ what: String) throws -> [Node] {
        guard case .box(let c) = n, c.kind == .tuple else { throw fail("\(what) arguments are not a tuple") }
        return c.items
    }

    func intArg(_ n: Node, _ what: String) throws -> Int {
        guard case .leaf(let v) = n, let i = v.intValue else { throw fail("\(what) must be an integer") }
        return i
    }

    func intList(_ n: Node, _ what: String) throws -> [Int] {
        guard case .box(let c) = n, c.kind == .tuple || c.kind == .list else { throw fail("\(what) must be a tuple of integers") }
        return try c.items.map { try intArg($0, what) }
    }

    mutating func reduce(_ callable: Node, _ argsNode: Node) throws -> Node {
        let (module, name, kind) = try callee(callable, "REDUCE")
        let args = try tupleItems(argsNode, printable("\(module).\(name)"))
        switch kind {
        case .orderedDict:
            let d = make(.dict)
            if let first = args.first {
                guard case .box(let pairs) = first, pairs.kind == .list || pairs.kind == .tuple else {
                    throw fail("OrderedDict argument is not a list of pairs")
                }
                for p in pairs.items {
                    let kv = try tupleItems(p, "OrderedDict item")
                    guard kv.count == 2 else { throw fail("OrderedDict item is not a pair") }
                    try setItems(d, kv)
                }
            }
            return .box(d)
        case .set, .frozenset:
            let s = make(.set)
            if let first = args.first {
                guard case .box(let c) = first, c.kind != .dict, c.kind != .object else { throw fail("set argument is not iterable") }
                s.items = c.items
            }
            return .box(s)
        case .rebuildTensorV2, .rebuildTensor:
            guard args.count >= 4 else { throw fail("\(printable(name)) needs at least 4 arguments") }
            guard case .leaf(.storage(let storage)) = args[0] else { throw fail("\(printable(name)) argument 0 is not a storage") }
            let offset = try intArg(args[1], "storage offset")
            let size = try intList(args[2], "tensor size")
            let stride = try intList(args[3], "tensor stride")
            var requiresGrad = false
            if args.count > 4, case .leaf(.bool(let b)) = args[4] { requiresGrad = b }
            return .leaf(.tensor(try TorchTensor(storage: storage, storageOffset: offset, shape: size, strides: stride,
                                                 requiresGrad: requiresGrad, source: source)))
        case .rebuildParameter, .rebuildParameterWithState:
            guard args.count >= 2, case .leaf(.tensor(let t)) = args[0] else { throw fail("\(printable(name)) argument 0 is not a tensor") }
            var requiresGrad = false
            if case .leaf(.bool(let b)) = args[1] { requiresGrad = b }
            return .leaf(.tensor(try TorchTensor(storage: t.storage, storageOffset: t.storageOffset, shape: t.shape,
                                                 strides: t.strides, requiresGrad: requiresGrad, source: source)))
        case .rebuildFromTypeV2:
            // (func, new_type, args, state): plain tensors and parameters only, never arbitrary subclasses.
            guard args.count == 4 else { throw fail("_rebuild_from_type_v2 needs 4 arguments") }
            let (_, _, typeKind) = try callee(args[1], "_rebuild_from_type_v2 type")
            guard case .tensorClass = typeKind else { throw fail("_rebuild_from_type_v2 of a tensor subclass is not supported") }
            let (_, _, funcKind) = try callee(args[0], "_rebuild_from_type_v2 function")
            switch funcKind {
            case .rebuildTensorV2, .rebuildTensor, .rebuildParameter, .rebuildParameterWithState: break
            default: throw fail("_rebuild_from_type_v2 with an unexpected rebuild function")
            }
            return try reduce(args[0], args[2])
        case .torchSize:
            guard args.count == 1, case .box(let c) = args[0], c.kind == .tuple || c.kind == .list else {
                throw fail("torch.Size argument is not a tuple")
            }
            return .box(make(.tuple, items: c.items))
        case .codecsEncode:
            // Protocol 2 pickles `bytes` as _codecs.encode(text, 'latin1'); interpreted here, not called.
            guard args.count == 2, case .leaf(.string(let text)) = args[0], case .leaf(.string(let encoding)) = args[1] else {
                throw fail("_codecs.encode needs (str, encoding)")
            }
            switch encoding.lowercased() {
            case "latin1", "latin-1", "iso-8859-1":
                var out: [UInt8] = []
                for scalar in text.unicodeScalars {
                    guard scalar.value < 256 else { throw fail("_codecs.encode: text is not Latin-1") }
                    out.append(UInt8(scalar.value))
                }
                return .leaf(.bytes(out))
            case "utf-8", "utf8":
                return .leaf(.bytes(Array(text.utf8)))
            default:
                throw fail("_codecs.encode with encoding '\(encoding.prefix(20))' is not supported")
            }
        case .jitIdentity:
            guard let first = args.first else { throw fail("\(printable(name)) needs an argument") }
            return first
        case .genericClass:
            let o = make(.object)
            o.className = "\(module).\(name)"
            o.args = args
            return .box(o)
        case .storageClass, .dtype, .tensorClass:
            throw fail("'\(printable("\(module).\(name)"))' cannot be called")
        }
    }

    mutating func newObject(_ cls: Node, _ argsNode: Node) throws -> Node {
        let (module, name, kind) = try callee(cls, "NEWOBJ")
        switch kind {
        case .genericClass, .orderedDict, .set, .frozenset:
            return try reduce(cls, argsNode)
        default:
            throw fail("NEWOBJ of '\(printable("\(module).\(name)"))' is not supported")
        }
    }

    func build(_ target: Node, _ state: Node) throws {
        switch target {
        case .box(let c) where c.kind == .object:
            c.state = state
        case .box(let c) where c.kind == .dict:
            // OrderedDict attributes (state_dict's `_metadata`): not part of the mapping; dropped.
            break
        case .leaf(.tensor):
            // Tensor.__setstate__ only restores autograd flags and hooks, which we do not keep.
            break
        default:
            throw fail("BUILD on an object that cannot take state")
        }
    }

    // MARK: Persistent ids

    mutating func persistent(_ pid: Node) throws -> Node {
        guard let load = unpickler.persistentLoad else {
            throw AdapterError.unsupported("\(source): pickle uses persistent ids but no loader resolves them")
        }
        var memo: [ObjectIdentifier: (PickleValue, Int)] = [:]
        var active: Set<ObjectIdentifier> = []
        let value = try convert(pid, depth: 0, memo: &memo, active: &active).0
        return .leaf(try load(value))
    }

    // MARK: Conversion

    func convertResult(_ n: Node) throws -> PickleValue {
        var memo: [ObjectIdentifier: (PickleValue, Int)] = [:]
        var active: Set<ObjectIdentifier> = []
        return try convert(n, depth: 0, memo: &memo, active: &active).0
    }

    /// Turns a node into a value. Shared containers are converted once (memo by identity); cycles, excess
    /// depth and excessive expanded size are refused so later recursive walks stay bounded.
    func convert(_ n: Node, depth: Int, memo: inout [ObjectIdentifier: (PickleValue, Int)],
                 active: inout Set<ObjectIdentifier>) throws -> (PickleValue, Int) {
        let c: Container
        switch n {
        case .leaf(let v): return (v, 1)
        case .box(let b): c = b
        }
        let id = ObjectIdentifier(c)
        if let done = memo[id] { return done }
        guard depth < options.maxDepth else { throw fail("containers nested deeper than \(options.maxDepth) levels") }
        guard !active.contains(id) else { throw fail("pickle contains a reference cycle") }
        active.insert(id)
        defer { active.remove(id) }
        var size = 1
        func sub(_ x: Node, _ memo: inout [ObjectIdentifier: (PickleValue, Int)], _ active: inout Set<ObjectIdentifier>) throws -> PickleValue {
            let (v, s) = try convert(x, depth: depth + 1, memo: &memo, active: &active)
            size = size > options.maxExpandedValues - s ? options.maxExpandedValues + 1 : size + s
            guard size <= options.maxExpandedValues else {
                throw fail("pickle expands to more than \(options.maxExpandedValues) values")
            }
            return v
        }
        let value: PickleValue
        switch c.kind {
        case .list: value = .list(try c.items.map { try sub($0, &memo, &active) })
        case .tuple: value = .tuple(try c.items.map { try sub($0, &memo, &active) })
        case .set: value = .set(try c.items.map { try sub($0, &memo, &active) })
        case .dict:
            var entries: [(key: PickleValue, value: PickleValue)] = []
            entries.reserveCapacity(c.keys.count)
            for (k, v) in zip(c.keys, c.items) {
                entries.append((key: try sub(k, &memo, &active), value: try sub(v, &memo, &active)))
            }
            value = .dict(entries)
        case .object:
            let args = try c.args.map { try sub($0, &memo, &active) }
            let state = try c.state.map { try sub($0, &memo, &active) }
            value = .object(PickleObject(className: c.className, args: args, state: state))
        }
        memo[id] = (value, size)
        return (value, size)
    }
}
