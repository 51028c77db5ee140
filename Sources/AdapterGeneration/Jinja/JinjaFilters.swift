import Foundation

// jinja2's tests (`is defined`, `is string`, ...) and filters (`trim`, `tojson`, `selectattr`, ...), each as
// `jinja2/tests.py` and `jinja2/filters.py` define it, including their quirks (`select` on a falsy value
// gives nothing; `indent` needs a str; `safe` makes a string).

extension JinjaBuiltins {
    // MARK: Tests

    /// Tests that take one argument besides the value; the others take none.
    static let binaryTests: Set<String> = [
        "divisibleby", "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">",
        "ge", ">=", "in", "sameas",
    ]

    static func test(_ name: String, _ value: JinjaValue, _ args: JinjaArguments) throws -> Bool {
        let expected = binaryTests.contains(name) ? 1 : 0
        if args.positional.count + args.keywords.count != expected {
            throw JinjaFailure.runtime("test '\(name)' takes \(expected + 1) argument(s) but \(args.positional.count + args.keywords.count + 1) were given")
        }
        func argument() throws -> JinjaValue {
            guard let first = args.positional.first ?? args.keywords.first?.1 else {
                throw JinjaFailure.runtime("test '\(name)' needs an argument")
            }
            return first
        }
        switch name {
        case "defined": return !value.isUndefined
        case "undefined": return value.isUndefined
        case "none": return value.isNone
        case "boolean": if case .bool = value { return true } else { return false }
        case "true": if case .bool(true) = value { return true } else { return false }
        case "false": if case .bool(false) = value { return true } else { return false }
        case "integer": if case .int = value { return true } else { return false }
        case "float": if case .double = value { return true } else { return false }
        case "number":
            switch value {
            case .int, .double, .bool: return true
            default: return false
            }
        case "string": if case .string = value { return true } else { return false }
        case "mapping": if case .dict = value { return true } else { return false }
        case "sequence":
            switch value {
            case .string, .list, .tuple, .dict, .range, .undefined: return true
            default: return false
            }
        case "iterable":
            switch value {
            case .string, .list, .tuple, .dict, .range, .iterator, .undefined, .loop: return true
            default: return false
            }
        case "callable":
            switch value {
            // LoopContext is callable (for recursive loops), and so is Undefined (calling it raises).
            case .callable, .loop, .undefined: return true
            default: return false
            }
        case "escaped": return false
        case "lower", "upper":
            return caseCheck(JinjaPython.scalars(try JinjaPython.str(value)), lower: name == "lower")
        case "odd", "even":
            // `value % 2 == 1` and `value % 2 == 0`, so floats work and strings hit printf formatting.
            let remainder = try JinjaOperators.binary(.mod, value, .int(2))
            return JinjaPython.equals(remainder, .int(name == "odd" ? 1 : 0))
        case "divisibleby":
            let remainder = try JinjaOperators.binary(.mod, value, try argument())
            return JinjaPython.equals(remainder, .int(0))
        case "eq", "equalto", "==": return JinjaPython.equals(value, try argument())
        case "ne", "!=": return !JinjaPython.equals(value, try argument())
        case "lt", "lessthan", "<": return try JinjaOperators.compare(.lt, value, try argument())
        case "le", "<=": return try JinjaOperators.compare(.le, value, try argument())
        case "gt", "greaterthan", ">": return try JinjaOperators.compare(.gt, value, try argument())
        case "ge", ">=": return try JinjaOperators.compare(.ge, value, try argument())
        case "in": return try JinjaOperators.contains(try argument(), value)
        case "sameas":
            let other = try argument()
            switch (value, other) {
            case (.none, .none): return true
            case (.bool(let a), .bool(let b)): return a == b
            case (.int(let a), .int(let b)): return a == b && (-5...256).contains(a)  // CPython's small-int cache
            case (.namespace(let a), .namespace(let b)): return a === b
            case (.callable(let a), .callable(let b)): return a === b
            default: return false
            }
        case "filter":
            // `'trim' is filter`: the value is the name.
            guard case .string(let filter) = value else { return false }
            return implementedFilters.contains(filter) || otherJinjaFilters.contains(filter)
        case "test":
            guard case .string(let test) = value else { return false }
            return tests.contains(test)
        default:
            throw JinjaFailure.runtime("No test named '\(name)'.")
        }
    }

    // MARK: Filters

    /// `make_attrgetter`: `attribute` may be dotted ("a.b") and integer parts index lists.
    static func attributeGetter(_ attribute: JinjaValue?) throws -> ((JinjaValue) throws -> JinjaValue)? {
        guard let attribute, !attribute.isNone else { return nil }
        let parts: [JinjaValue]
        switch attribute {
        case .string(let s): parts = s.split(separator: ".", omittingEmptySubsequences: false).map { Int($0).map(JinjaValue.int) ?? .string(String($0)) }
        case .int: parts = [attribute]
        default: throw JinjaFailure.runtime("attribute must be a string or an integer")
        }
        return { item in try parts.reduce(item) { try getitem($0, $1) } }
    }

    static func length(_ value: JinjaValue) throws -> Int {
        switch value {
        case .string(let s): return s.unicodeScalars.count
        case .list(let items), .tuple(let items): return items.count
        case .dict(let d): return d.count
        case .undefined: return 0
        case .range(let r): return r.count
        case .loop(let l): return l.items.count
        case .iterator: throw JinjaFailure.runtime("object of type 'generator' has no len()")
        default: throw JinjaFailure.runtime("object of type '\(JinjaPython.typeName(value))' has no len()")
        }
    }

    /// Sort key of `sort`, `unique`, `min`, `max`, `dictsort`: strings lower-cased unless case-sensitive.
    static func sortKey(_ v: JinjaValue, caseSensitive: Bool) -> JinjaValue {
        if !caseSensitive, case .string(let s) = v { return .string(s.lowercased()) }
        return v
    }

    /// A stable sort with Python's `<` (raises on incomparable types, as Python's sort does).
    static func sorted(_ items: [JinjaValue], keys: [JinjaValue], reverse: Bool) throws -> [JinjaValue] {
        let order = try items.indices.sorted { i, j in
            let c = try JinjaPython.compare(keys[i], keys[j], "<") ?? 0
            if c != 0 { return reverse ? c > 0 : c < 0 }
            return i < j
        }
        return order.map { items[$0] }
    }

    static func selectOrReject(_ items: [JinjaValue], _ args: ArraySlice<JinjaValue>, _ keywords: [(String, JinjaValue)],
                                       select: Bool, getter: ((JinjaValue) throws -> JinjaValue)?) throws -> JinjaValue {
        var testName: String?
        var testArgs = JinjaArguments(positional: [], keywords: keywords)
        if let first = args.first {
            guard case .string(let name) = first else { throw JinjaFailure.runtime("test name must be a string") }
            guard tests.contains(name) else { throw JinjaFailure.runtime("No test named '\(name)'.") }
            testName = name
            testArgs.positional = Array(args.dropFirst())
        }
        var result: [JinjaValue] = []
        for item in items {
            let subject = try getter?(item) ?? item
            let passed = try testName.map { try test($0, subject, testArgs) } ?? JinjaPython.truthy(subject)
            if passed == select { result.append(item) }
        }
        return .iterator(result)
    }

    static func filter(_ name: String, _ value: JinjaValue, _ args: JinjaArguments) throws -> JinjaValue {
        switch name {
        case "abs":
            _ = try args.bind(name, [])
            switch value {
            case .int(let i): guard i != .min else { throw JinjaFailure.unsupported("integer arithmetic beyond 64 bits") }; return .int(abs(i))
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return .double(abs(d))
            case .undefined(let u): throw JinjaFailure.runtime(u.hint)
            default: throw JinjaFailure.runtime("bad operand type for abs(): '\(JinjaPython.typeName(value))'")
            }
        case "capitalize":
            _ = try args.bind(name, [])
            return .string(capitalize(try JinjaPython.str(value)))
        case "count", "length":
            _ = try args.bind(name, [])
            return .int(try length(value))
        case "d", "default":
            let p = try args.bind(name, ["default_value", "boolean"])
            let useDefault = value.isUndefined || ((p[1].map(JinjaPython.truthy) ?? false) && !JinjaPython.truthy(value))
            return useDefault ? (p[0] ?? .string("")) : value
        case "dictsort":
            let p = try args.bind(name, ["case_sensitive", "by", "reverse"])
            guard case .dict(let d) = value else { throw JinjaFailure.runtime("dictsort filter needs a mapping") }
            let caseSensitive = p[0].map(JinjaPython.truthy) ?? false
            let byValue: Bool
            switch try p[1].map(JinjaPython.str) ?? "key" {
            case "key": byValue = false
            case "value": byValue = true
            default: throw JinjaFailure.runtime("You can only sort by either \"key\" or \"value\"")
            }
            let pairs = d.pairs.map { JinjaValue.tuple([$0.0, $0.1]) }
            let keys = d.pairs.map { sortKey(byValue ? $0.1 : $0.0, caseSensitive: caseSensitive) }
            return .list(try sorted(pairs, keys: keys, reverse: p[2].map(JinjaPython.truthy) ?? false))
        case "format":
            if !args.positional.isEmpty && !args.keywords.isEmpty {
                throw JinjaFailure.runtime("can't handle positional and keyword arguments at the same time")
            }
            let operand: JinjaValue = args.keywords.isEmpty ? .tuple(args.positional) : .dict(JinjaDict(args.keywords))
            return .string(try JinjaPrintf.format(try JinjaPython.str(value), operand))
        case "first":
            _ = try args.bind(name, [])
            return try iterate(value).first ?? .undefined("No first item, sequence was empty.")
        case "last":
            _ = try args.bind(name, [])
            if case .iterator = value { throw JinjaFailure.runtime("'generator' object is not reversible") }
            return try iterate(value).last ?? .undefined("No last item, sequence was empty.")
        case "float":
            let p = try args.bind(name, ["default"])
            let fallback = p[0] ?? .double(0)
            switch value {
            case .double: return value
            case .int(let i): return .double(Double(i))
            case .bool(let b): return .double(b ? 1 : 0)
            case .string(let s): return pythonFloat(s).map(JinjaValue.double) ?? fallback
            case .undefined(let u): throw JinjaFailure.runtime(u.hint)
            default: return fallback
            }
        case "int":
            let p = try args.bind(name, ["default", "base"])
            let fallback = p[0] ?? .int(0)
            let base = try p[1].map { v -> Int in
                guard let b = integer(v) else { throw JinjaFailure.runtime("base must be an integer") }
                return b
            } ?? 10
            switch value {
            case .int: return value
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d):
                guard d.isFinite, abs(d) < 9.2e18 else { return fallback }
                return .int(Int(d))
            case .string(let s):
                if let i = pythonInt(s, base: base) { return .int(i) }
                if let d = pythonFloat(s), d.isFinite, abs(d) < 9.2e18 { return .int(Int(d)) }
                return fallback
            case .undefined(let u):
                throw JinjaFailure.runtime(u.hint)
            default:
                return fallback
            }
        case "indent":
            let p = try args.bind(name, ["width", "first", "blank"])
            let indentation: String
            switch p[0] ?? .int(4) {
            case .string(let s): indentation = s
            case let w:
                let width = integer(w) ?? 4
                guard width <= JinjaOperators.maxRepeatedLength else { throw JinjaFailure.unsupported("indent widths above \(JinjaOperators.maxRepeatedLength)") }
                indentation = String(repeating: " ", count: max(0, width))
            }
            // `s += "\n"`: only a str works (an Undefined or a number raise).
            if case .undefined(let u) = value { throw JinjaFailure.runtime(u.hint) }
            guard case .string(let input) = value else {
                throw JinjaFailure.runtime("unsupported operand type(s) for +=: '\(JinjaPython.typeName(value))' and 'str'")
            }
            let text = input + "\n"
            var result: String
            if p[2].map(JinjaPython.truthy) ?? false {
                result = splitlines(text, keepEnds: false).joined(separator: "\n" + indentation)
            } else {
                var lines = splitlines(text, keepEnds: false)
                result = lines.removeFirst()
                if !lines.isEmpty {
                    result += "\n" + lines.map { $0.isEmpty ? $0 : indentation + $0 }.joined(separator: "\n")
                }
            }
            if p[1].map(JinjaPython.truthy) ?? false { result = indentation + result }
            return .string(result)
        case "items":
            _ = try args.bind(name, [])
            switch value {
            case .undefined: return .iterator([])
            case .dict(let d): return .iterator(d.pairs.map { .tuple([$0.0, $0.1]) })
            default: throw JinjaFailure.runtime("Can only get item pairs from a mapping.")
            }
        case "join":
            let p = try args.bind(name, ["d", "attribute"])
            let separator = try p[0].map(JinjaPython.str) ?? ""
            let getter = try attributeGetter(p[1])
            return .string(try iterate(value).map { try JinjaPython.str(try getter?($0) ?? $0) }.joined(separator: separator))
        case "list":
            _ = try args.bind(name, [])
            return .list(try iterate(value))
        case "lower":
            _ = try args.bind(name, [])
            return .string(try JinjaPython.str(value).lowercased())
        case "upper":
            _ = try args.bind(name, [])
            return .string(try JinjaPython.str(value).uppercased())
        case "map":
            // map, select and friends start with `if value:`, so a falsy non-sequence gives nothing.
            guard JinjaPython.truthy(value) else { return .iterator([]) }
            let items = try iterate(value)
            if let attribute = args.keywords.first(where: { $0.0 == "attribute" })?.1 {
                for (k, _) in args.keywords where k != "attribute" && k != "default" {
                    throw JinjaFailure.runtime("Unexpected keyword argument '\(k)'")
                }
                guard args.positional.isEmpty else { throw JinjaFailure.runtime("Unexpected positional arguments with 'attribute'") }
                let fallback = args.keywords.first(where: { $0.0 == "default" })?.1
                let getter = try attributeGetter(attribute)!
                return .iterator(try items.map { item in
                    let v = try getter(item)
                    if let fallback, v.isUndefined { return fallback }
                    return v
                })
            }
            guard case .string(let filterName)? = args.positional.first else {
                throw JinjaFailure.runtime("map requires a filter argument")
            }
            guard implementedFilters.contains(filterName) else {
                if otherJinjaFilters.contains(filterName) { throw JinjaFailure.unsupported("the '\(filterName)' filter") }
                throw JinjaFailure.runtime("No filter named '\(filterName)'.")
            }
            let rest = JinjaArguments(positional: Array(args.positional.dropFirst()), keywords: args.keywords)
            return .iterator(try items.map { try filter(filterName, $0, rest) })
        case "max", "min":
            let p = try args.bind(name, ["case_sensitive", "attribute"])
            let items = try iterate(value)
            guard !items.isEmpty else { return .undefined("No aggregated item, sequence was empty.") }
            let getter = try attributeGetter(p[1])
            let caseSensitive = p[0].map(JinjaPython.truthy) ?? false
            let keys = try items.map { sortKey(try getter?($0) ?? $0, caseSensitive: caseSensitive) }
            var best = 0
            for i in 1..<items.count {
                let c = try JinjaPython.compare(keys[i], keys[best], name == "max" ? ">" : "<") ?? 0
                if name == "max" ? c > 0 : c < 0 { best = i }
            }
            return items[best]
        case "reject", "select":
            guard JinjaPython.truthy(value) else { return .iterator([]) }
            return try selectOrReject(try iterate(value), args.positional[...], args.keywords, select: name == "select", getter: nil)
        case "rejectattr", "selectattr":
            guard JinjaPython.truthy(value) else { return .iterator([]) }
            guard let attribute = args.positional.first else { throw JinjaFailure.runtime("Missing parameter for attribute name") }
            let getter = try attributeGetter(attribute)
            return try selectOrReject(try iterate(value), args.positional.dropFirst(), args.keywords,
                                      select: name == "selectattr", getter: getter)
        case "replace":
            let p = try args.bind(name, ["old", "new", "count"])
            guard let old = p[0], let new = p[1] else { throw JinjaFailure.runtime("replace() missing arguments") }
            let count = try p[2].map { v -> Int in
                guard let i = integer(v) else { throw JinjaFailure.runtime("count must be an integer") }
                return i
            } ?? -1
            return .string(replace(try JinjaPython.str(value), try JinjaPython.str(old), try JinjaPython.str(new), count: count))
        case "reverse":
            _ = try args.bind(name, [])
            if case .string(let s) = value { return .string(JinjaPython.string(s.unicodeScalars.reversed())) }
            if case .iterator = value { return .list(try iterate(value).reversed()) }
            return .iterator(try iterate(value).reversed())
        case "round":
            let p = try args.bind(name, ["precision", "method"])
            let precision = try p[0].map { v -> Int in
                guard let i = integer(v) else { throw JinjaFailure.runtime("precision must be an integer") }
                return i
            } ?? 0
            let method = try p[1].map(JinjaPython.str) ?? "common"
            guard ["common", "ceil", "floor"].contains(method) else {
                throw JinjaFailure.runtime("method must be common, ceil or floor")
            }
            if case .undefined = value { throw JinjaFailure.runtime("type Undefined doesn't define __round__ method") }
            if method == "common", let i = integer(value) {
                // round(int, n) stays an int; a negative n rounds to tens, hundreds, ... (half to even).
                guard precision < 0 else { return .int(i) }
                if precision < -18 { return .int(0) }
                let scale = Int(Foundation.pow(10.0, Double(-precision)))
                let q = (Double(i) / Double(scale)).rounded(.toNearestOrEven)
                let (r, o) = Int(q).multipliedReportingOverflow(by: scale)
                if o { throw JinjaFailure.unsupported("integer arithmetic beyond 64 bits") }
                return .int(r)
            }
            guard let x = { () -> Double? in
                switch value {
                case .int(let i): return Double(i)
                case .bool(let b): return b ? 1 : 0
                case .double(let d): return d
                default: return nil
                }
            }() else { throw JinjaFailure.runtime("round needs a number") }
            let scale = Foundation.pow(10.0, Double(precision))
            switch method {
            case "ceil": return .double((x * scale).rounded(.up) / scale)
            case "floor": return .double((x * scale).rounded(.down) / scale)
            default:
                // Python's round() is correctly rounded (half to even on the exact decimal value);
                // parsing the decimal text keeps that for the precisions templates use.
                if precision == 0 { return .double(x.rounded(.toNearestOrEven)) }
                // A double has at most 17 significant digits (and 1074 fractional ones): beyond 330
                // decimals rounding changes nothing.
                if precision > 330 || !x.isFinite { return .double(x) }
                let text = String(format: "%.\(max(0, precision))f", x)
                return .double(Double(text) ?? (x * scale).rounded(.toNearestOrEven) / scale)
            }
        case "safe":
            // Markup(value): a string (escaping is off, so nothing else changes).
            _ = try args.bind(name, [])
            return .string(try JinjaPython.str(value))
        case "sort":
            // make_multi_attrgetter: "a,b" sorts by a then b; the key is always a list.
            let p = try args.bind(name, ["reverse", "case_sensitive", "attribute"])
            let items = try iterate(value)
            var getters: [((JinjaValue) throws -> JinjaValue)?] = [nil]
            if case .string(let spec)? = p[2] {
                getters = try spec.split(separator: ",", omittingEmptySubsequences: false).map { try attributeGetter(.string(String($0))) }
            } else if let attribute = p[2], !attribute.isNone {
                getters = [try attributeGetter(attribute)]
            }
            let caseSensitive = p[1].map(JinjaPython.truthy) ?? false
            let keys = try items.map { item in
                JinjaValue.list(try getters.map { sortKey(try $0?(item) ?? item, caseSensitive: caseSensitive) })
            }
            return .list(try sorted(items, keys: keys, reverse: p[0].map(JinjaPython.truthy) ?? false))
        case "string":
            _ = try args.bind(name, [])
            return .string(try JinjaPython.str(value))
        case "sum":
            let p = try args.bind(name, ["attribute", "start"])
            let getter = try attributeGetter(p[0])
            var total = p[1] ?? .int(0)
            for item in try iterate(value) { total = try JinjaOperators.binary(.add, total, try getter?(item) ?? item) }
            return total
        case "title":
            _ = try args.bind(name, [])
            return .string(jinjaTitle(try JinjaPython.str(value)))
        case "tojson":
            // transformers replaces jinja2's filter with json.dumps(ensure_ascii=False), which does not
            // HTML-escape `<`, `>`, `&` and `'`.
            let p = try args.bind(name, ["ensure_ascii", "indent", "separators", "sort_keys"])
            return .string(try JinjaJSON.dumps(value, ensureASCII: p[0].map(JinjaPython.truthy) ?? false,
                                               indent: p[1], separators: p[2], sortKeys: p[3].map(JinjaPython.truthy) ?? false))
        case "trim":
            let p = try args.bind(name, ["chars"])
            return .string(strip(try JinjaPython.str(value), chars: try p[0].map(JinjaPython.str)))
        case "unique":
            let p = try args.bind(name, ["case_sensitive", "attribute"])
            let getter = try attributeGetter(p[1])
            let caseSensitive = p[0].map(JinjaPython.truthy) ?? false
            var seen: [JinjaValue] = []
            var result: [JinjaValue] = []
            for item in try iterate(value) {
                let key = sortKey(try getter?(item) ?? item, caseSensitive: caseSensitive)
                guard JinjaPython.isHashable(key) else {
                    throw JinjaFailure.runtime("unhashable type: '\(JinjaPython.typeName(key))'")
                }
                if !seen.contains(where: { JinjaPython.equals($0, key) }) {
                    seen.append(key)
                    result.append(item)
                }
            }
            return .iterator(result)
        case "wordcount":
            _ = try args.bind(name, [])
            var count = 0
            var inWord = false
            for c in try JinjaPython.str(value).unicodeScalars {
                let isWord = c == "_" || isLetterCategory(c) || c.properties.numericType != nil
                    || c.properties.generalCategory == .nonspacingMark
                if isWord && !inWord { count += 1 }
                inWord = isWord
            }
            return .int(count)
        default:
            throw JinjaFailure.unsupported("the '\(name)' filter")
        }
    }
}
