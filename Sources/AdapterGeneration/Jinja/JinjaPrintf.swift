import Foundation

/// Python's printf-style `str % args` (CPython's `PyUnicode_Format`), used by the `%` operator on a
/// string and by the `format` filter.
enum JinjaPrintf {
    static func format(_ format: String, _ operand: JinjaValue) throws -> String {
        var args: [JinjaValue]
        var argumentCount: Int
        var argumentIndex: Int
        if case .tuple(let items) = operand {
            args = items
            argumentCount = items.count
            argumentIndex = 0
        } else {
            args = [operand]
            argumentCount = -1
            argumentIndex = -2
        }
        // Anything subscriptable but a tuple or a string may serve `%(key)s` (and may go unused).
        var mapping: JinjaValue?
        switch operand {
        case .dict, .list, .range, .undefined: mapping = operand
        default: mapping = nil
        }

        func nextArgument() throws -> JinjaValue {
            guard argumentIndex < argumentCount else {
                throw JinjaFailure.runtime("not enough arguments for format string")
            }
            argumentIndex += 1
            return argumentCount < 0 ? args[0] : args[argumentIndex - 1]
        }

        let f = JinjaPython.scalars(format)
        var out = String.UnicodeScalarView()
        var i = 0
        func peek() -> Unicode.Scalar? { i < f.count ? f[i] : nil }
        while i < f.count {
            let c = f[i]
            i += 1
            guard c == "%" else { out.append(c); continue }
            if peek() == "(" {
                guard let map = mapping else { throw JinjaFailure.runtime("format requires a mapping") }
                var depth = 1
                let keyStart = i + 1
                i += 1
                while i < f.count, depth > 0 {
                    if f[i] == "(" { depth += 1 } else if f[i] == ")" { depth -= 1 }
                    i += 1
                }
                guard depth == 0 else { throw JinjaFailure.runtime("incomplete format key") }
                let key = JinjaPython.string(f[keyStart..<(i - 1)])
                guard case .dict(let d) = map, let value = d[key] else {
                    if case .dict = map { throw JinjaFailure.runtime("KeyError: '\(key)'") }
                    throw JinjaFailure.runtime("list indices must be integers or slices, not str")
                }
                args = [value]
                argumentCount = -1
                argumentIndex = -2
            }
            var minus = false, plus = false, space = false, alternate = false, zero = false
            flags: while let p = peek() {
                switch p {
                case "-": minus = true
                case "+": plus = true
                case " ": space = true
                case "#": alternate = true
                case "0": zero = true
                default: break flags
                }
                i += 1
            }
            func number() throws -> Int? {
                if peek() == "*" {
                    i += 1
                    guard case .int(let n) = try nextArgument() else { throw JinjaFailure.runtime("* wants int") }
                    return n
                }
                var n: Int?
                while let p = peek(), p.value >= 48, p.value <= 57 {
                    n = min((n ?? 0) * 10 + Int(p.value - 48), Int.max / 100)
                    i += 1
                }
                return n
            }
            var width = try number() ?? 0
            if width < 0 { minus = true; width = width == .min ? .max : -width }
            var precision: Int?
            if peek() == "." {
                i += 1
                precision = max(0, try number() ?? 0)
            }
            if width > JinjaOperators.maxRepeatedLength || (precision ?? 0) > 1000 {
                throw JinjaFailure.unsupported("printf widths above \(JinjaOperators.maxRepeatedLength) or precisions above 1000")
            }
            while let p = peek(), p == "h" || p == "l" || p == "L" { i += 1 }
            guard let type = peek() else { throw JinjaFailure.runtime("incomplete format") }
            i += 1
            if type == "%" { out.append("%"); continue }

            var body: String
            var sign = ""
            var numeric = false
            let value = try nextArgument()
            switch type {
            case "s", "r", "a":
                body = type == "s" ? try JinjaPython.str(value) : try JinjaPython.repr(value)
                if type == "a" { body = asciiEscaped(body) }
                if let precision { body = JinjaPython.string(body.unicodeScalars.prefix(precision)) }
            case "d", "i", "u", "x", "X", "o":
                let integer: Int
                switch value {
                case .int(let n): integer = n
                case .bool(let b): integer = b ? 1 : 0
                case .double(let d) where "diu".unicodeScalars.contains(type):
                    guard d.isFinite, abs(d) < 9.2e18 else { throw JinjaFailure.runtime("cannot convert float \(JinjaPython.formatDouble(d)) to integer") }
                    integer = Int(d)
                case .undefined(let u): throw JinjaFailure.runtime(u.hint)
                default:
                    let what = "diu".unicodeScalars.contains(type) ? "a real number" : "an integer"
                    throw JinjaFailure.runtime("%\(type) format: \(what) is required, not \(JinjaPython.typeName(value))")
                }
                let radix = type == "x" || type == "X" ? 16 : (type == "o" ? 8 : 10)
                var digits = String(integer.magnitude, radix: radix, uppercase: type == "X")
                if let precision, digits.count < precision { digits = String(repeating: "0", count: precision - digits.count) + digits }
                if alternate && radix != 10 { digits = (type == "o" ? "0o" : (type == "X" ? "0X" : "0x")) + digits }
                sign = integer < 0 ? "-" : (plus ? "+" : (space ? " " : ""))
                body = digits
                numeric = true
            case "e", "E", "f", "F", "g", "G":
                let x: Double
                switch value {
                case .int(let n): x = Double(n)
                case .bool(let b): x = b ? 1 : 0
                case .double(let d): x = d
                case .undefined(let u): throw JinjaFailure.runtime(u.hint)
                default: throw JinjaFailure.runtime("must be real number, not \(JinjaPython.typeName(value))")
                }
                let spec = "%" + (alternate ? "#" : "") + ".\(precision ?? 6)" + String(type)
                var text = x.isFinite ? String(format: spec, x.magnitude) : (x.isNaN ? "nan" : "inf")
                if !x.isFinite && "EFG".unicodeScalars.contains(type) { text = text.uppercased() }
                sign = (x.sign == .minus && !x.isNaN) ? "-" : (plus ? "+" : (space ? " " : ""))
                body = text
                numeric = x.isFinite
            case "c":
                switch value {
                case .int(let n):
                    guard let scalar = Unicode.Scalar(UInt32(clamping: max(0, n))), n >= 0 else {
                        throw JinjaFailure.runtime("%c arg not in range(0x110000)")
                    }
                    body = String(scalar)
                case .string(let s) where s.unicodeScalars.count == 1: body = s
                default: throw JinjaFailure.runtime("%c requires an int or a unicode character")
                }
            default:
                throw JinjaFailure.runtime(
                    "unsupported format character '\(type)' (0x\(String(type.value, radix: 16))) at index \(i - 1)")
            }
            let length = sign.unicodeScalars.count + body.unicodeScalars.count
            var field = sign + body
            if width > length {
                let padding = width - length
                if minus {
                    field += String(repeating: " ", count: padding)
                } else if zero && numeric {
                    // Zeros go after the sign and any 0x prefix.
                    var prefix = sign
                    var digits = body
                    if alternate, let r = ["0x", "0X", "0o"].first(where: { body.hasPrefix($0) }) {
                        prefix += r
                        digits = String(body.dropFirst(2))
                    }
                    field = prefix + String(repeating: "0", count: padding) + digits
                } else {
                    field = String(repeating: " ", count: padding) + field
                }
            }
            out.append(contentsOf: field.unicodeScalars)
        }
        if argumentIndex < argumentCount && mapping == nil {
            throw JinjaFailure.runtime("not all arguments converted during string formatting")
        }
        return String(out)
    }

    /// Python's `ascii()`: `repr` with non-ASCII characters escaped.
    private static func asciiEscaped(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            if c.value < 0x80 {
                out.unicodeScalars.append(c)
            } else if c.value < 0x100 {
                out += String(format: "\\x%02x", c.value)
            } else if c.value < 0x10000 {
                out += String(format: "\\u%04x", c.value)
            } else {
                out += String(format: "\\U%08x", c.value)
            }
        }
        return out
    }
}
