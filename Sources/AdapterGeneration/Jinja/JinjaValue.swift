import Foundation

// Runtime values of the Jinja interpreter, with the Python semantics jinja2 inherits: `str()` and
// `repr()` text, truthiness, `==` across int/float/bool, ordering, and Undefined. Strings are compared,
// indexed and measured by Unicode scalar (Python code point), never by Swift `Character`, so "e\u{301}"
// and "é" stay different and "\r\n" counts as two.

/// An Undefined value: renders as "", is falsy and iterates as empty; any other use throws `hint`
/// (jinja2's default `Undefined`).
struct JinjaUndefined {
    var hint: String
}

enum JinjaValue {
    case undefined(JinjaUndefined)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([JinjaValue])
    case tuple([JinjaValue])
    case dict(JinjaDict)
    /// Python's `range` object: a sequence that prints as `range(0, 3)`.
    case range(JinjaRange)
    /// A one-shot Python iterator (`select`, `map`, `reverse`, `unique` results): always truthy,
    /// iterable, but without a length or a printable form.
    case iterator([JinjaValue])
    case namespace(JinjaNamespace)
    case loop(JinjaLoop)
    case callable(JinjaCallable)

    static func undefined(_ hint: String) -> JinjaValue { .undefined(JinjaUndefined(hint: hint)) }

    var isUndefined: Bool { if case .undefined = self { return true } else { return false } }
    var isNone: Bool { if case .none = self { return true } else { return false } }
    var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
}

/// A Python dict: insertion-ordered, keys compared with Python `==` (so 1, 1.0 and True collide).
struct JinjaDict {
    private(set) var keys: [JinjaValue] = []
    private(set) var values: [JinjaValue] = []

    init() {}
    init(_ pairs: [(String, JinjaValue)]) {
        for (k, v) in pairs { self[.string(k)] = v }
    }

    var count: Int { keys.count }
    var pairs: [(JinjaValue, JinjaValue)] { Array(zip(keys, values)) }

    func index(of key: JinjaValue) -> Int? {
        // Fast path for the common string keys.
        if case .string(let s) = key {
            for (i, k) in keys.enumerated() {
                if case .string(let t) = k, JinjaPython.scalarsEqual(s, t) { return i }
            }
            return nil
        }
        return keys.firstIndex { JinjaPython.equals($0, key) }
    }

    subscript(key: JinjaValue) -> JinjaValue? {
        get { index(of: key).map { values[$0] } }
        set {
            if let i = index(of: key) {
                if let newValue { values[i] = newValue } else { keys.remove(at: i); values.remove(at: i) }
            } else if let newValue {
                keys.append(key)
                values.append(newValue)
            }
        }
    }

    subscript(name: String) -> JinjaValue? { self[.string(name)] }
}

/// `range(start, stop, step)`, with Python's slice-of-a-range arithmetic.
struct JinjaRange: Equatable {
    var start: Int
    var stop: Int
    var step: Int

    var count: Int {
        // The distance as an unsigned number never overflows; the count is clamped to Int.max.
        let (low, high) = step > 0 ? (start, stop) : (stop, start)
        guard low < high else { return 0 }
        let distance = UInt(bitPattern: high &- low)
        let n = (distance - 1) / step.magnitude + 1
        return n > UInt(Int.max) ? Int.max : Int(n)
    }

    /// Wrapping, so slicing a range near Int.max cannot trap (Python would use big integers).
    subscript(i: Int) -> Int { start &+ i &* step }

    var items: [JinjaValue] { (0..<count).map { .int(self[$0]) } }
}

/// `namespace(...)`: the one mutable object a template may assign attributes to.
final class JinjaNamespace {
    var attributes: JinjaDict
    init(_ attributes: JinjaDict) { self.attributes = attributes }
}

/// The `loop` variable of a for loop.
final class JinjaLoop {
    let items: [JinjaValue]
    let index0: Int
    let depth0: Int

    init(items: [JinjaValue], index0: Int, depth0: Int) {
        self.items = items
        self.index0 = index0
        self.depth0 = depth0
    }

    func attribute(_ name: String) -> JinjaValue? {
        let n = items.count
        switch name {
        case "index": return .int(index0 + 1)
        case "index0": return .int(index0)
        case "revindex": return .int(n - index0)
        case "revindex0": return .int(n - index0 - 1)
        case "first": return .bool(index0 == 0)
        case "last": return .bool(index0 == n - 1)
        case "length": return .int(n)
        case "depth": return .int(depth0 + 1)
        case "depth0": return .int(depth0)
        case "previtem":
            return index0 > 0 ? items[index0 - 1] : .undefined("there is no previous item")
        case "nextitem":
            return index0 + 1 < n ? items[index0 + 1] : .undefined("there is no next item")
        case "cycle":
            let i = index0
            return .callable(JinjaCallable(name: "cycle") { args in
                guard !args.positional.isEmpty else { throw JinjaFailure.runtime("no items for cycling given") }
                return args.positional[i % args.positional.count]
            })
        default: return nil
        }
    }
}

/// A function value: a global (`range`), a bound method (`'x'.strip`) or a macro.
final class JinjaCallable {
    let name: String
    let call: (JinjaArguments) throws -> JinjaValue
    init(name: String, call: @escaping (JinjaArguments) throws -> JinjaValue) {
        self.name = name
        self.call = call
    }
}

/// Call arguments: positional values, then keywords in source order.
struct JinjaArguments {
    var positional: [JinjaValue] = []
    var keywords: [(String, JinjaValue)] = []

    /// Binds arguments to `parameters` the way Python does for a function without `*args`/`**kwargs`:
    /// positional first, then keywords by name; missing ones are nil.
    func bind(_ function: String, _ parameters: [String]) throws -> [JinjaValue?] {
        if positional.count > parameters.count {
            throw JinjaFailure.runtime("\(function)() takes at most \(parameters.count) argument(s) (\(positional.count) given)")
        }
        var bound: [JinjaValue?] = positional.map { $0 }
        bound += Array(repeating: nil, count: parameters.count - positional.count)
        for (name, value) in keywords {
            guard let i = parameters.firstIndex(of: name) else {
                throw JinjaFailure.runtime("\(function)() got an unexpected keyword argument '\(name)'")
            }
            if bound[i] != nil { throw JinjaFailure.runtime("\(function)() got multiple values for argument '\(name)'") }
            bound[i] = value
        }
        return bound
    }
}

/// Errors raised while lexing, parsing or rendering; `ChatTemplate` turns them into `ChatTemplateError`.
struct JinjaFailure: Error {
    enum Kind { case syntax, raised, unsupported, runtime }
    var kind: Kind
    var message: String
    var line: Int?
    var column: Int?

    static func runtime(_ message: String) -> JinjaFailure { JinjaFailure(kind: .runtime, message: message) }
    static func unsupported(_ message: String) -> JinjaFailure { JinjaFailure(kind: .unsupported, message: message) }
    static func syntax(_ message: String, line: Int, column: Int) -> JinjaFailure {
        JinjaFailure(kind: .syntax, message: message, line: line, column: column)
    }

    /// The failure with a position, unless it already has one (the innermost position wins).
    func located(_ location: (line: Int, column: Int)) -> JinjaFailure {
        var copy = self
        if copy.line == nil { copy.line = location.line; copy.column = location.column }
        return copy
    }
}

// MARK: - Python semantics

enum JinjaPython {
    // MARK: Strings as code points

    static func scalars(_ s: String) -> [Unicode.Scalar] { Array(s.unicodeScalars) }

    static func string<S: Sequence>(_ scalars: S) -> String where S.Element == Unicode.Scalar {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        return String(view)
    }

    static func scalarsEqual(_ a: String, _ b: String) -> Bool { a.unicodeScalars.elementsEqual(b.unicodeScalars) }

    /// Python's `str.isspace()` set, which is also what `\s` matches in a `str` regex.
    static func isSpace(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
            return true
        default:
            return false
        }
    }

    /// First index of `needle` in `haystack` at or after `from`, by code points.
    static func find(_ haystack: [Unicode.Scalar], _ needle: [Unicode.Scalar], from: Int = 0) -> Int? {
        if needle.isEmpty { return from <= haystack.count ? from : nil }
        guard haystack.count >= needle.count else { return nil }
        var i = max(0, from)
        while i + needle.count <= haystack.count {
            if haystack[i] == needle[0] && haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }

    // MARK: Type names, as Python spells them in error messages

    static func typeName(_ v: JinjaValue) -> String {
        switch v {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .list: return "list"
        case .tuple: return "tuple"
        case .dict: return "dict"
        case .range: return "range"
        case .iterator: return "generator"
        case .namespace: return "Namespace"
        case .loop: return "LoopContext"
        case .callable: return "function"
        }
    }

    /// jinja2's `object_type_repr`, used in Undefined hints: "'dict object' has no attribute 'x'".
    static func objectTypeRepr(_ v: JinjaValue) -> String {
        if case .none = v { return "None" }
        return "\(typeName(v)) object"
    }

    // MARK: Truthiness

    static func truthy(_ v: JinjaValue) -> Bool {
        switch v {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .list(let a), .tuple(let a): return !a.isEmpty
        case .dict(let d): return d.count > 0
        case .range(let r): return r.count > 0
        case .loop(let l): return !l.items.isEmpty
        case .iterator, .namespace, .callable: return true
        }
    }

    // MARK: Equality and ordering

    private enum Number { case int(Int), double(Double) }

    private static func number(_ v: JinjaValue) -> Number? {
        switch v {
        case .bool(let b): return .int(b ? 1 : 0)
        case .int(let i): return .int(i)
        case .double(let d): return .double(d)
        default: return nil
        }
    }

    private static func compareNumbers(_ a: Number, _ b: Number) -> Int? {
        switch (a, b) {
        case (.int(let x), .int(let y)): return x < y ? -1 : (x > y ? 1 : 0)
        case (.int(let x), .double(let y)): return compareIntDouble(x, y)
        case (.double(let x), .int(let y)): return compareIntDouble(y, x).map { -$0 }
        case (.double(let x), .double(let y)):
            if x.isNaN || y.isNaN { return nil }
            return x < y ? -1 : (x > y ? 1 : 0)
        }
    }

    /// Exact int/float comparison (Python compares the mathematical values, not a rounded copy).
    private static func compareIntDouble(_ x: Int, _ y: Double) -> Int? {
        if y.isNaN { return nil }
        if y == .infinity { return -1 }
        if y == -.infinity { return 1 }
        let fy = y.rounded(.down)
        if fy >= 9.3e18 { return -1 }
        if fy < -9.3e18 { return 1 }
        let iy = Int(fy)
        if x < iy { return -1 }
        if x > iy { return 1 }
        return fy == y ? 0 : -1
    }

    static func equals(_ a: JinjaValue, _ b: JinjaValue) -> Bool {
        if let x = number(a), let y = number(b) { return compareNumbers(x, y) == 0 }
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.string(let x), .string(let y)): return scalarsEqual(x, y)
        case (.list(let x), .list(let y)), (.tuple(let x), .tuple(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { equals($0, $1) }
        case (.dict(let x), .dict(let y)):
            guard x.count == y.count else { return false }
            for (k, v) in x.pairs {
                guard let w = y[k], equals(v, w) else { return false }
            }
            return true
        case (.range(let x), .range(let y)):
            // Ranges compare as the sequences they produce.
            guard x.count == y.count else { return false }
            if x.count == 0 { return true }
            return x.start == y.start && (x.count == 1 || x.step == y.step)
        case (.namespace(let x), .namespace(let y)): return x === y
        case (.loop(let x), .loop(let y)): return x === y
        case (.callable(let x), .callable(let y)): return x === y
        default: return false
        }
    }

    /// Python's `<` family: numbers, strings (by code point), lists and tuples (lexicographically).
    static func compare(_ a: JinjaValue, _ b: JinjaValue, _ op: String) throws -> Int? {
        if let x = number(a), let y = number(b) { return compareNumbers(x, y) }
        switch (a, b) {
        case (.string(let x), .string(let y)):
            var i = x.unicodeScalars.makeIterator(), j = y.unicodeScalars.makeIterator()
            while true {
                switch (i.next(), j.next()) {
                case (nil, nil): return 0
                case (nil, _): return -1
                case (_, nil): return 1
                case (let p?, let q?): if p != q { return p.value < q.value ? -1 : 1 }
                }
            }
        case (.list(let x), .list(let y)), (.tuple(let x), .tuple(let y)):
            for (p, q) in zip(x, y) where !equals(p, q) {
                return try compare(p, q, op)
            }
            return x.count < y.count ? -1 : (x.count > y.count ? 1 : 0)
        default:
            if case .undefined(let u) = a { throw JinjaFailure.runtime(u.hint) }
            if case .undefined(let u) = b { throw JinjaFailure.runtime(u.hint) }
            throw JinjaFailure.runtime("'\(op)' not supported between instances of '\(typeName(a))' and '\(typeName(b))'")
        }
    }

    static func isHashable(_ v: JinjaValue) -> Bool {
        switch v {
        case .list, .dict, .iterator: return false
        case .tuple(let items): return items.allSatisfy(isHashable)
        default: return true
        }
    }

    // MARK: str() and repr()

    /// Python `str(value)`, which is what `{{ value }}` prints.
    static func str(_ v: JinjaValue) throws -> String {
        switch v {
        case .undefined: return ""
        case .string(let s): return s
        default: return try repr(v)
        }
    }

    static func repr(_ v: JinjaValue) throws -> String {
        switch v {
        case .undefined: return "Undefined"
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .double(let d): return formatDouble(d)
        case .string(let s): return reprString(s)
        case .list(let items): return "[" + (try items.map(repr)).joined(separator: ", ") + "]"
        case .tuple(let items):
            if items.count == 1 { return "(" + (try repr(items[0])) + ",)" }
            return "(" + (try items.map(repr)).joined(separator: ", ") + ")"
        case .dict(let d):
            return "{" + (try d.pairs.map { try repr($0.0) + ": " + repr($0.1) }).joined(separator: ", ") + "}"
        case .range(let r): return "range(\(r.start), \(r.stop)" + (r.step == 1 ? ")" : ", \(r.step))")
        case .namespace(let ns): return "<Namespace " + (try repr(.dict(ns.attributes))) + ">"
        case .loop(let l): return "<LoopContext \(l.index0 + 1)/\(l.items.count)>"
        case .iterator:
            throw JinjaFailure.unsupported("printing a Python iterator (apply '|list' first)")
        case .callable(let c):
            throw JinjaFailure.unsupported("printing the function '\(c.name)'")
        }
    }

    /// Python's `repr(str)`: single quotes unless the text has a single quote and no double quote.
    static func reprString(_ s: String) -> String {
        let quote: Unicode.Scalar = (s.unicodeScalars.contains("'") && !s.unicodeScalars.contains("\"")) ? "\"" : "'"
        var out = String.UnicodeScalarView()
        out.append(quote)
        for c in s.unicodeScalars {
            switch c {
            case quote, "\\": out.append("\\"); out.append(c)
            case "\t": out.append(contentsOf: "\\t".unicodeScalars)
            case "\n": out.append(contentsOf: "\\n".unicodeScalars)
            case "\r": out.append(contentsOf: "\\r".unicodeScalars)
            default:
                if isPrintable(c) {
                    out.append(c)
                } else if c.value < 0x100 {
                    out.append(contentsOf: String(format: "\\x%02x", c.value).unicodeScalars)
                } else if c.value < 0x10000 {
                    out.append(contentsOf: String(format: "\\u%04x", c.value).unicodeScalars)
                } else {
                    out.append(contentsOf: String(format: "\\U%08x", c.value).unicodeScalars)
                }
            }
        }
        out.append(quote)
        return String(out)
    }

    /// Python's `str.isprintable()` for one character: not a control, format, surrogate, private-use,
    /// unassigned or separator character, except the ASCII space.
    static func isPrintable(_ c: Unicode.Scalar) -> Bool {
        if c == " " { return true }
        switch c.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned,
             .lineSeparator, .paragraphSeparator, .spaceSeparator:
            return false
        default:
            return true
        }
    }

    /// Python's `repr(float)`: the shortest round-tripping digits, positional for exponents in
    /// [-4, 16), else scientific with a two-digit minimum exponent ("1e+16", "1e-05").
    static func formatDouble(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
        // Swift's description also prints the shortest round-tripping digits; only the layout differs.
        var text = "\(abs(d))"
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(text[text.index(after: e)...])!
            text = String(text[..<e])
        }
        var intPart = text, fracPart = ""
        if let dot = text.firstIndex(of: ".") {
            intPart = String(text[..<dot])
            fracPart = String(text[text.index(after: dot)...])
        }
        // Normalise to digits d1 d2 ... with the decimal point after the first nonzero digit.
        var digits = intPart + fracPart
        var pointPos = intPart.count + exponent  // position of the decimal point within `digits`
        while digits.hasPrefix("0") && digits.count > 1 { digits.removeFirst(); pointPos -= 1 }
        while digits.hasSuffix("0") && digits.count > 1 { digits.removeLast() }
        let exp10 = pointPos - 1
        var out = d < 0 ? "-" : ""
        if exp10 >= -4 && exp10 < 16 {
            if pointPos <= 0 {
                out += "0." + String(repeating: "0", count: -pointPos) + digits
            } else if pointPos >= digits.count {
                out += digits + String(repeating: "0", count: pointPos - digits.count) + ".0"
            } else {
                let i = digits.index(digits.startIndex, offsetBy: pointPos)
                out += digits[..<i] + "." + digits[i...]
            }
        } else {
            let mantissa = digits.count > 1 ? String(digits.prefix(1)) + "." + digits.dropFirst() : digits
            let sign = exp10 < 0 ? "-" : "+"
            let magnitude = abs(exp10)
            out += mantissa + "e" + sign + (magnitude < 10 ? "0" : "") + String(magnitude)
        }
        return out
    }
}
