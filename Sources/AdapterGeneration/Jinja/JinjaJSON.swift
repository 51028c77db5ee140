import Foundation

/// Python's `json.dumps`, as transformers' `tojson` calls it.
enum JinjaJSON {
    static func dumps(_ value: JinjaValue, ensureASCII: Bool, indent: JinjaValue?, separators: JinjaValue?,
                      sortKeys: Bool) throws -> String {
        var indentText: String?
        switch indent {
        case nil, .none?: indentText = nil
        case .string(let s)?: indentText = s
        case .int(let n)?:
            guard n <= 1000 else { throw JinjaFailure.unsupported("tojson indents above 1000") }
            indentText = String(repeating: " ", count: max(0, n))
        case let other?: throw JinjaFailure.runtime("indent must be an int or a string, not \(JinjaPython.typeName(other))")
        }
        var itemSeparator = indentText == nil ? ", " : ","
        var keySeparator = ": "
        if let separators, !separators.isNone {
            let parts = try JinjaBuiltins.iterate(separators)
            guard parts.count == 2, case .string(let a) = parts[0], case .string(let b) = parts[1] else {
                throw JinjaFailure.runtime("separators must be a pair of strings")
            }
            (itemSeparator, keySeparator) = (a, b)
        }
        var out = ""
        try encode(value, level: 0)
        return out

        func encode(_ v: JinjaValue, level: Int) throws {
            switch v {
            case .none: out += "null"
            case .bool(let b): out += b ? "true" : "false"
            case .int(let i): out += String(i)
            case .double(let d):
                if d.isNaN { out += "NaN" } else if d.isInfinite { out += d < 0 ? "-Infinity" : "Infinity" } else { out += JinjaPython.formatDouble(d) }
            case .string(let s): out += quote(s)
            case .list(let items), .tuple(let items):
                if items.isEmpty { out += "[]"; return }
                out += "["
                let newline = indentText.map { "\n" + String(repeating: $0, count: level + 1) }
                if let newline { out += newline }
                for (i, item) in items.enumerated() {
                    if i > 0 { out += itemSeparator + (newline ?? "") }
                    try encode(item, level: level + 1)
                }
                if let indentText { out += "\n" + String(repeating: indentText, count: level) }
                out += "]"
            case .dict(let d):
                if d.count == 0 { out += "{}"; return }
                var pairs: [(String, JinjaValue)] = try d.pairs.map { (k, v) in
                    switch k {
                    case .string(let s): return (s, v)
                    case .int(let i): return (String(i), v)
                    case .double(let x): return (JinjaPython.formatDouble(x), v)
                    case .bool(let b): return (b ? "true" : "false", v)
                    case .none: return ("null", v)
                    default: throw JinjaFailure.runtime("keys must be str, int, float, bool or None, not \(JinjaPython.typeName(k))")
                    }
                }
                if sortKeys {
                    pairs = pairs.enumerated().sorted { a, b in
                        let c = (try? JinjaPython.compare(.string(a.element.0), .string(b.element.0), "<")) ?? 0
                        return c != 0 ? c < 0 : a.offset < b.offset
                    }.map { $0.element }
                }
                out += "{"
                let newline = indentText.map { "\n" + String(repeating: $0, count: level + 1) }
                if let newline { out += newline }
                for (i, (k, item)) in pairs.enumerated() {
                    if i > 0 { out += itemSeparator + (newline ?? "") }
                    out += quote(k) + keySeparator
                    try encode(item, level: level + 1)
                }
                if let indentText { out += "\n" + String(repeating: indentText, count: level) }
                out += "}"
            default:
                throw JinjaFailure.runtime("Object of type \(JinjaPython.typeName(v)) is not JSON serializable")
            }
        }

        func quote(_ s: String) -> String {
            var r = "\""
            for c in s.unicodeScalars {
                switch c {
                case "\"": r += "\\\""
                case "\\": r += "\\\\"
                case "\n": r += "\\n"
                case "\r": r += "\\r"
                case "\t": r += "\\t"
                case "\u{08}": r += "\\b"
                case "\u{0C}": r += "\\f"
                default:
                    if c.value < 0x20 || (ensureASCII && c.value > 0x7F) {
                        if c.value > 0xFFFF {
                            let v = c.value - 0x10000
                            r += String(format: "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF))
                        } else {
                            r += String(format: "\\u%04x", c.value)
                        }
                    } else {
                        r.unicodeScalars.append(c)
                    }
                }
            }
            return r + "\""
        }
    }
}
