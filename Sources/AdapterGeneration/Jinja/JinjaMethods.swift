import Foundation

// The Python `str`, `dict` and `list` methods templates call (`message.content.strip()`, `d.items()`), and
// the Python string semantics the filters share: `strip`, `split`, `title`, by code point.

extension JinjaBuiltins {
    // MARK: Methods

    static func bound(_ name: String, _ body: @escaping (JinjaArguments) throws -> JinjaValue) -> JinjaValue {
        .callable(JinjaCallable(name: name, call: body))
    }

    static func method(_ object: JinjaValue, _ name: String) -> JinjaValue? {
        switch object {
        case .string(let s):
            guard strMethodNames.contains(name) else { return nil }
            return bound(name) { args in try stringMethod(s, name, args) }
        case .dict(let d):
            if dictMutators.contains(name) { return unsafe(name, object) }
            guard dictMethods.contains(name) else { return nil }
            return bound(name) { args in
                switch name {
                case "items":
                    _ = try args.bind("items", [])
                    return .list(d.pairs.map { .tuple([$0.0, $0.1]) })
                case "keys":
                    _ = try args.bind("keys", [])
                    return .list(d.keys)
                case "values":
                    _ = try args.bind("values", [])
                    return .list(d.values)
                case "copy":
                    return .dict(d)
                default:
                    guard args.keywords.isEmpty, (1...2).contains(args.positional.count) else {
                        throw JinjaFailure.runtime("get expected 1 or 2 positional arguments")
                    }
                    let key = args.positional[0]
                    guard JinjaPython.isHashable(key) else {
                        throw JinjaFailure.runtime("unhashable type: '\(JinjaPython.typeName(key))'")
                    }
                    return d[key] ?? (args.positional.count > 1 ? args.positional[1] : .none)
                }
            }
        case .range(let r):
            guard name == "count" || name == "index" else { return nil }
            return method(.tuple(r.items), name)
        case .list(let items), .tuple(let items):
            if case .list = object, listMutators.contains(name) { return unsafe(name, object) }
            switch name {
            case "count":
                return bound(name) { args in
                    guard args.positional.count == 1 else { throw JinjaFailure.runtime("count() takes exactly one argument") }
                    return .int(items.filter { JinjaPython.equals($0, args.positional[0]) }.count)
                }
            case "index":
                return bound(name) { args in
                    guard args.positional.count == 1 else { throw JinjaFailure.runtime("index() takes exactly one argument") }
                    guard let i = items.firstIndex(where: { JinjaPython.equals($0, args.positional[0]) }) else {
                        throw JinjaFailure.runtime("value is not in \(JinjaPython.typeName(object))")
                    }
                    return .int(i)
                }
            case "copy" where { if case .list = object { return true } else { return false } }():
                return bound(name) { _ in object }
            default:
                return nil
            }
        case .namespace, .loop:
            return nil
        default:
            return nil
        }
    }

    static func stringArgument(_ v: JinjaValue?, _ function: String) throws -> String? {
        guard let v, !v.isNone else { return nil }
        guard case .string(let s) = v else {
            throw JinjaFailure.runtime("\(function) arg must be None or str")
        }
        return s
    }

    static func stringMethod(_ s: String, _ name: String, _ args: JinjaArguments) throws -> JinjaValue {
        switch name {
        case "strip", "lstrip", "rstrip":
            let p = try args.bind(name, ["chars"])
            let chars = try stringArgument(p[0], name)
            return .string(strip(s, chars: chars, leading: name != "rstrip", trailing: name != "lstrip"))
        case "split", "rsplit":
            let p = try args.bind(name, ["sep", "maxsplit"])
            let sep = try stringArgument(p[0], name)
            let maxsplit = try p[1].map { v -> Int in
                guard let i = integer(v) else { throw JinjaFailure.runtime("maxsplit must be an integer") }
                return i
            } ?? -1
            return .list(try split(s, sep, maxsplit, fromRight: name == "rsplit").map { .string($0) })
        case "splitlines":
            let p = try args.bind(name, ["keepends"])
            return .list(splitlines(s, keepEnds: p[0].map(JinjaPython.truthy) ?? false).map { .string($0) })
        case "startswith", "endswith":
            guard args.keywords.isEmpty, (1...3).contains(args.positional.count) else {
                throw JinjaFailure.runtime("\(name) takes 1 to 3 arguments")
            }
            var scalars = JinjaPython.scalars(s)
            if args.positional.count > 1 {
                let sliced = try slice(.string(s), args.positional[1], args.positional.count > 2 ? args.positional[2] : nil, nil)
                scalars = JinjaPython.scalars(sliced.stringValue ?? "")
            }
            let candidates: [JinjaValue]
            switch args.positional[0] {
            case .string: candidates = [args.positional[0]]
            case .tuple(let items): candidates = items
            default:
                throw JinjaFailure.runtime("\(name) first arg must be str or a tuple of str, not \(JinjaPython.typeName(args.positional[0]))")
            }
            for candidate in candidates {
                guard case .string(let c) = candidate else { throw JinjaFailure.runtime("tuple for \(name) must only contain str") }
                let affix = JinjaPython.scalars(c)
                if affix.count <= scalars.count {
                    let match = name == "startswith" ? scalars.prefix(affix.count).elementsEqual(affix)
                        : scalars.suffix(affix.count).elementsEqual(affix)
                    if match { return .bool(true) }
                }
            }
            return .bool(false)
        case "upper": _ = try args.bind(name, []); return .string(s.uppercased())
        case "lower": _ = try args.bind(name, []); return .string(s.lowercased())
        case "title": _ = try args.bind(name, []); return .string(pythonTitle(s))
        case "capitalize": _ = try args.bind(name, []); return .string(capitalize(s))
        case "replace":
            guard args.keywords.isEmpty, (2...3).contains(args.positional.count),
                  case .string(let old) = args.positional[0], case .string(let new) = args.positional[1] else {
                throw JinjaFailure.runtime("replace expects two strings and an optional count")
            }
            let count = args.positional.count > 2 ? integer(args.positional[2]) ?? -1 : -1
            return .string(replace(s, old, new, count: count))
        case "find", "rfind", "count", "index", "rindex":
            guard args.keywords.isEmpty, args.positional.count == 1 else {
                throw JinjaFailure.unsupported("str.\(name) with start/end arguments")
            }
            guard case .string(let needle) = args.positional[0] else {
                throw JinjaFailure.runtime("must be str, not \(JinjaPython.typeName(args.positional[0]))")
            }
            let hay = JinjaPython.scalars(s), n = JinjaPython.scalars(needle)
            if name == "count" {
                if n.isEmpty { return .int(hay.count + 1) }
                var count = 0, i = 0
                while let j = JinjaPython.find(hay, n, from: i) { count += 1; i = j + n.count }
                return .int(count)
            }
            var found = JinjaPython.find(hay, n) ?? -1
            if name == "rfind" || name == "rindex" {
                var i = 0
                while let j = JinjaPython.find(hay, n, from: i) { found = j; i = j + 1 }
            }
            if found < 0 && (name == "index" || name == "rindex") { throw JinjaFailure.runtime("substring not found") }
            return .int(found)
        case "join":
            let p = try args.bind(name, ["iterable"])
            guard let iterable = p[0] else { throw JinjaFailure.runtime("join() takes exactly one argument") }
            let parts = try iterate(iterable).map { v -> String in
                guard case .string(let t) = v else {
                    throw JinjaFailure.runtime("sequence item: expected str instance, \(JinjaPython.typeName(v)) found")
                }
                return t
            }
            return .string(parts.joined(separator: s))
        case "removeprefix", "removesuffix":
            let p = try args.bind(name, ["affix"])
            guard case .string(let affix)? = p[0] else { throw JinjaFailure.runtime("\(name)() argument must be str") }
            let scalars = JinjaPython.scalars(s), a = JinjaPython.scalars(affix)
            if name == "removeprefix", scalars.starts(with: a) { return .string(JinjaPython.string(scalars.dropFirst(a.count))) }
            if name == "removesuffix", !a.isEmpty, scalars.count >= a.count, scalars.suffix(a.count).elementsEqual(a) {
                return .string(JinjaPython.string(scalars.dropLast(a.count)))
            }
            return .string(s)
        case "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper":
            _ = try args.bind(name, [])
            let scalars = JinjaPython.scalars(s)
            switch name {
            case "isspace": return .bool(!scalars.isEmpty && scalars.allSatisfy(JinjaPython.isSpace))
            case "isdigit": return .bool(!scalars.isEmpty && scalars.allSatisfy { $0.properties.numericType == .digit || $0.properties.numericType == .decimal })
            case "isalpha": return .bool(!scalars.isEmpty && scalars.allSatisfy { $0.properties.isAlphabetic && isLetterCategory($0) })
            case "isalnum": return .bool(!scalars.isEmpty && scalars.allSatisfy { isLetterCategory($0) || $0.properties.numericType != nil })
            case "islower": return .bool(caseCheck(scalars, lower: true))
            default: return .bool(caseCheck(scalars, lower: false))
            }
        case "format":
            return .string(try format(s, args))
        default:
            throw JinjaFailure.unsupported("the str.\(name)() method")
        }
    }

    static func isLetterCategory(_ c: Unicode.Scalar) -> Bool {
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    static func isCased(_ c: Unicode.Scalar) -> Bool {
        c.properties.isLowercase || c.properties.isUppercase || c.properties.generalCategory == .titlecaseLetter
    }

    /// Python's `islower`/`isupper`: at least one cased character, and none of the other case.
    static func caseCheck(_ scalars: [Unicode.Scalar], lower: Bool) -> Bool {
        var cased = false
        for c in scalars {
            if lower {
                if c.properties.isUppercase || c.properties.generalCategory == .titlecaseLetter { return false }
                if c.properties.isLowercase { cased = true }
            } else {
                if c.properties.isLowercase || c.properties.generalCategory == .titlecaseLetter { return false }
                if c.properties.isUppercase { cased = true }
            }
        }
        return cased
    }

    /// `str.format` with `{}`, `{0}` and `{name}` fields (no format specs or conversions).
    static func format(_ s: String, _ args: JinjaArguments) throws -> String {
        var out = ""
        var auto = 0
        let scalars = JinjaPython.scalars(s)
        var i = 0
        while i < scalars.count {
            let c = scalars[i]
            if c == "{" {
                if i + 1 < scalars.count, scalars[i + 1] == "{" { out += "{"; i += 2; continue }
                guard let close = scalars[i...].firstIndex(of: "}") else {
                    throw JinjaFailure.runtime("Single '{' encountered in format string")
                }
                let field = JinjaPython.string(scalars[(i + 1)..<close])
                if field.contains(":") || field.contains("!") || field.contains(".") || field.contains("[") {
                    throw JinjaFailure.unsupported("str.format fields with conversions or format specs")
                }
                let value: JinjaValue
                if field.isEmpty {
                    guard auto < args.positional.count else { throw JinjaFailure.runtime("Replacement index \(auto) out of range for positional args tuple") }
                    value = args.positional[auto]
                    auto += 1
                } else if let n = Int(field) {
                    guard n < args.positional.count else { throw JinjaFailure.runtime("Replacement index \(n) out of range for positional args tuple") }
                    value = args.positional[n]
                } else {
                    guard let v = args.keywords.last(where: { $0.0 == field })?.1 else { throw JinjaFailure.runtime("KeyError: '\(field)'") }
                    value = v
                }
                out += try JinjaPython.str(value)
                i = close + 1
            } else if c == "}" {
                guard i + 1 < scalars.count, scalars[i + 1] == "}" else {
                    throw JinjaFailure.runtime("Single '}' encountered in format string")
                }
                out += "}"
                i += 2
            } else {
                out.unicodeScalars.append(c)
                i += 1
            }
        }
        return out
    }

    // MARK: String helpers (Python semantics, by code point)

    static func strip(_ s: String, chars: String?, leading: Bool = true, trailing: Bool = true) -> String {
        let scalars = JinjaPython.scalars(s)
        let set = chars.map { Set($0.unicodeScalars) }
        func strippable(_ c: Unicode.Scalar) -> Bool { set?.contains(c) ?? JinjaPython.isSpace(c) }
        var start = 0, end = scalars.count
        if leading { while start < end, strippable(scalars[start]) { start += 1 } }
        if trailing { while end > start, strippable(scalars[end - 1]) { end -= 1 } }
        return JinjaPython.string(scalars[start..<end])
    }

    static func split(_ s: String, _ separator: String?, _ maxsplit: Int, fromRight: Bool) throws -> [String] {
        let scalars = JinjaPython.scalars(s)
        guard let separator else {
            // Runs of whitespace; leading and trailing whitespace ignored.
            var words: [[Unicode.Scalar]] = []
            if fromRight {
                var i = scalars.count
                var splits = 0
                while i > 0 {
                    while i > 0, JinjaPython.isSpace(scalars[i - 1]) { i -= 1 }
                    if i == 0 { break }
                    if maxsplit >= 0 && splits == maxsplit {
                        words.append(Array(scalars[0..<i]))
                        break
                    }
                    var j = i
                    while j > 0, !JinjaPython.isSpace(scalars[j - 1]) { j -= 1 }
                    words.append(Array(scalars[j..<i]))
                    splits += 1
                    i = j
                }
                return words.reversed().map(JinjaPython.string)
            }
            var i = 0
            var splits = 0
            while i < scalars.count {
                while i < scalars.count, JinjaPython.isSpace(scalars[i]) { i += 1 }
                if i == scalars.count { break }
                if maxsplit >= 0 && splits == maxsplit {
                    words.append(Array(scalars[i...]))
                    break
                }
                var j = i
                while j < scalars.count, !JinjaPython.isSpace(scalars[j]) { j += 1 }
                words.append(Array(scalars[i..<j]))
                splits += 1
                i = j
            }
            return words.map(JinjaPython.string)
        }
        let sep = JinjaPython.scalars(separator)
        if sep.isEmpty { throw JinjaFailure.runtime("empty separator") }
        var positions: [Int] = []
        var i = 0
        while let j = JinjaPython.find(scalars, sep, from: i) { positions.append(j); i = j + sep.count }
        if maxsplit >= 0 && positions.count > maxsplit {
            if fromRight {
                // rsplit matches from the right, which can differ for overlapping separators.
                positions = []
                var end = scalars.count
                while positions.count < maxsplit, end >= sep.count {
                    var k = end - sep.count
                    var found: Int?
                    while k >= 0 {
                        if scalars[k..<(k + sep.count)].elementsEqual(sep) { found = k; break }
                        k -= 1
                    }
                    guard let f = found else { break }
                    positions.insert(f, at: 0)
                    end = f
                }
            } else {
                positions = Array(positions.prefix(maxsplit))
            }
        }
        var parts: [String] = []
        var start = 0
        for p in positions {
            parts.append(JinjaPython.string(scalars[start..<p]))
            start = p + sep.count
        }
        parts.append(JinjaPython.string(scalars[start...]))
        return parts
    }

    /// Python's `str.splitlines`.
    static func splitlines(_ s: String, keepEnds: Bool) -> [String] {
        let scalars = JinjaPython.scalars(s)
        var lines: [String] = []
        var start = 0, i = 0
        while i < scalars.count {
            let c = scalars[i].value
            let isBreak = [0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029].contains(c)
            if isBreak {
                var end = i + 1
                if c == 0x0D, end < scalars.count, scalars[end] == "\n" { end += 1 }
                lines.append(JinjaPython.string(scalars[start..<(keepEnds ? end : i)]))
                start = end
                i = end
            } else {
                i += 1
            }
        }
        if start < scalars.count { lines.append(JinjaPython.string(scalars[start...])) }
        return lines
    }

    static func replace(_ s: String, _ old: String, _ new: String, count: Int) -> String {
        let scalars = JinjaPython.scalars(s), o = JinjaPython.scalars(old), n = JinjaPython.scalars(new)
        var out: [Unicode.Scalar] = []
        var replaced = 0
        if o.isEmpty {
            // Python inserts `new` before every character and at the end.
            for c in scalars {
                if count < 0 || replaced < count { out += n; replaced += 1 }
                out.append(c)
            }
            if count < 0 || replaced < count { out += n }
            return JinjaPython.string(out)
        }
        var i = 0
        while i < scalars.count {
            if (count < 0 || replaced < count), let j = JinjaPython.find(scalars, o, from: i) {
                out += scalars[i..<j]
                out += n
                replaced += 1
                i = j + o.count
            } else {
                out += scalars[i...]
                break
            }
        }
        return JinjaPython.string(out)
    }

    static func upper(_ c: Unicode.Scalar) -> String { c.properties.uppercaseMapping }
    static func lower(_ c: Unicode.Scalar) -> String { c.properties.lowercaseMapping }

    /// Python 3.8+ `str.capitalize`: the first character in title case, the rest in lower case.
    static func capitalize(_ s: String) -> String {
        var out = ""
        for (i, c) in s.unicodeScalars.enumerated() {
            out += i == 0 ? c.properties.titlecaseMapping : lower(c)
        }
        return out
    }

    /// Python's `str.title`: title case after an uncased character, lower case after a cased one.
    static func pythonTitle(_ s: String) -> String {
        var out = ""
        var previousCased = false
        for c in s.unicodeScalars {
            out += previousCased ? lower(c) : c.properties.titlecaseMapping
            previousCased = isCased(c)
        }
        return out
    }

    /// jinja2's `title` filter: words split at runs of `-`, whitespace, `(`, `{`, `[` and `<`; each
    /// word's first character upper-cased and the rest lower-cased.
    static func jinjaTitle(_ s: String) -> String {
        var out = ""
        var atWordStart = true
        for c in s.unicodeScalars {
            let isSeparator = JinjaPython.isSpace(c) || "-({[<".unicodeScalars.contains(c)
            if isSeparator {
                out.unicodeScalars.append(c)
                atWordStart = true
            } else {
                out += atWordStart ? upper(c) : lower(c)
                atWordStart = false
            }
        }
        return out
    }

    /// Python's `int(text, base)`: surrounding whitespace, a sign, `_` between digits, and for base 0
    /// (or the matching base) a 0x/0o/0b prefix.
    static func pythonInt(_ text: String, base: Int) -> Int? {
        var t = JinjaPython.scalars(strip(text, chars: nil))
        var negative = false
        if let first = t.first, first == "+" || first == "-" { negative = first == "-"; t.removeFirst() }
        var radix = base
        if t.count >= 2, t[0] == "0" {
            let p = Character(t[1]).lowercased()
            let prefixed = ["x": 16, "o": 8, "b": 2][p]
            if let prefixed, base == 0 || base == prefixed {
                radix = prefixed
                t.removeFirst(2)
                if t.first == "_" { t.removeFirst() }
            }
        }
        if radix == 0 {
            radix = 10
            // Base 0 refuses leading zeros in a nonzero decimal.
            if t.count > 1, t[0] == "0", t.contains(where: { $0 != "0" && $0 != "_" }) { return nil }
        }
        guard (2...36).contains(radix), !t.isEmpty, t.first != "_", t.last != "_" else { return nil }
        var digits = ""
        var previousUnderscore = false
        for c in t {
            if c == "_" {
                if previousUnderscore { return nil }
                previousUnderscore = true
                continue
            }
            previousUnderscore = false
            digits.unicodeScalars.append(c)
        }
        guard let magnitude = Int(digits, radix: radix), !digits.hasPrefix("+"), !digits.hasPrefix("-") else { return nil }
        return negative ? -magnitude : magnitude
    }

    /// Python's `float(text)` for decimal text, `inf` and `nan`.
    static func pythonFloat(_ text: String) -> Double? {
        let t = strip(text, chars: nil)
        let lowered = t.lowercased()
        let body = lowered.hasPrefix("+") || lowered.hasPrefix("-") ? String(lowered.dropFirst()) : lowered
        if ["inf", "infinity", "nan"].contains(body) { return Double(lowered) }
        let allowed = Set("0123456789.e+-_")
        guard !body.isEmpty, body.allSatisfy({ allowed.contains($0) }), !body.contains("__"),
              !body.hasPrefix("_"), !body.hasSuffix("_") else { return nil }
        return Double(t.replacingOccurrences(of: "_", with: ""))
    }
}
