import Foundation

// jinja2's globals (`range`, `namespace`, ...) plus transformers' `raise_exception` and `strftime_now`; the
// names of the filters and tests (checked at parse time, as jinja2 checks them at compile time); and the
// sandbox's attribute and item rules. transformers renders in an `ImmutableSandboxedEnvironment`:
// `a.b` tries the attribute (a method) then the item, `a['b']` the item then the attribute, and
// mutating methods such as `list.append` resolve to an Undefined that fails when called.
// Methods are in JinjaMethods.swift, filters and tests in JinjaFilters.swift.

enum JinjaBuiltins {
    // MARK: Names

    static let implementedFilters: Set<String> = [
        "abs", "capitalize", "count", "d", "default", "dictsort", "first", "float", "format", "indent", "int", "items",
        "join", "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace",
        "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title", "tojson", "trim",
        "unique", "upper", "wordcount",
    ]

    /// jinja2 3.1's other built-in filters: a template using one is refused by name.
    static let otherJinjaFilters: Set<String> = [
        "attr", "batch", "center", "e", "escape", "filesizeformat", "forceescape", "groupby",
        "pprint", "random", "slice", "striptags", "truncate", "urlencode", "urlize", "wordwrap", "xmlattr",
    ]

    static let tests: Set<String> = [
        "!=", "<", "<=", "==", ">", ">=", "boolean", "callable", "defined", "divisibleby", "eq", "equalto",
        "escaped", "even", "false", "filter", "float", "ge", "greaterthan", "gt", "in", "integer", "iterable",
        "le", "lessthan", "lower", "lt", "mapping", "ne", "none", "number", "odd", "sameas", "sequence",
        "string", "test", "true", "undefined", "upper",
    ]

    /// jinja2 checks filter and test names when it compiles a template; so do we, when parsing.
    static func checkFilter(_ name: String, at token: JinjaToken) throws {
        if implementedFilters.contains(name) { return }
        if otherJinjaFilters.contains(name) {
            throw JinjaFailure(kind: .unsupported, message: "the '\(name)' filter", line: token.line, column: token.column)
        }
        throw JinjaFailure.syntax("No filter named '\(name)'.", line: token.line, column: token.column)
    }

    static func checkTest(_ name: String, at token: JinjaToken) throws {
        if tests.contains(name) { return }
        throw JinjaFailure.syntax("No test named '\(name)'.", line: token.line, column: token.column)
    }

    // MARK: Globals

    /// jinja2's default globals plus the two transformers adds.
    static func globals(into scope: JinjaScope) {
        func define(_ name: String, _ body: @escaping (JinjaArguments) throws -> JinjaValue) {
            scope.variables[name] = .callable(JinjaCallable(name: name, call: body))
        }
        define("range") { args in
            guard args.keywords.isEmpty else { throw JinjaFailure.runtime("range() takes no keyword arguments") }
            let ints = try args.positional.map { v -> Int in
                guard let i = integer(v) else {
                    throw JinjaFailure.runtime("'\(JinjaPython.typeName(v))' object cannot be interpreted as an integer")
                }
                return i
            }
            var start = 0, stop = 0, step = 1
            switch ints.count {
            case 1: stop = ints[0]
            case 2: (start, stop) = (ints[0], ints[1])
            case 3: (start, stop, step) = (ints[0], ints[1], ints[2])
            default: throw JinjaFailure.runtime("range expected 1 to 3 arguments, got \(ints.count)")
            }
            if step == 0 { throw JinjaFailure.runtime("range() arg 3 must not be zero") }
            let range = JinjaRange(start: start, stop: stop, step: step)
            // The sandbox's MAX_RANGE.
            if range.count > 100_000 {
                throw JinjaFailure.runtime("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).")
            }
            return .range(range)
        }
        define("namespace") { args in .namespace(JinjaNamespace(try makeDict("namespace", args))) }
        define("dict") { args in .dict(try makeDict("dict", args)) }
        define("raise_exception") { args in
            let message = try args.positional.first.map(JinjaPython.str) ?? ""
            throw JinjaFailure(kind: .raised, message: message)
        }
        define("strftime_now") { args in
            let p = try args.bind("strftime_now", ["format"])
            guard let format = p[0] else { throw JinjaFailure.runtime("strftime_now() missing argument 'format'") }
            return .string(try strftime(try JinjaPython.str(format), Date()))
        }
        define("joiner") { args in
            let p = try args.bind("joiner", ["sep"])
            let separator = try p[0].map(JinjaPython.str) ?? ", "
            final class State { var used = false }
            let state = State()
            return .callable(JinjaCallable(name: "joiner") { _ in
                defer { state.used = true }
                return .string(state.used ? separator : "")
            })
        }
        define("cycler") { _ in throw JinjaFailure.unsupported("the 'cycler' global") }
        define("lipsum") { _ in throw JinjaFailure.unsupported("the 'lipsum' global") }
    }

    static func makeDict(_ function: String, _ args: JinjaArguments) throws -> JinjaDict {
        var dict = JinjaDict()
        if args.positional.count > 1 { throw JinjaFailure.runtime("\(function) expected at most 1 argument") }
        if let first = args.positional.first {
            switch first {
            case .dict(let d): dict = d
            default:
                for pair in try iterate(first) {
                    let kv = try iterate(pair, unpacking: true)
                    guard kv.count == 2 else { throw JinjaFailure.runtime("dictionary update sequence element has length \(kv.count); 2 is required") }
                    dict[kv[0]] = kv[1]
                }
            }
        }
        for (k, v) in args.keywords { dict[.string(k)] = v }
        return dict
    }

    static func integer(_ v: JinjaValue) -> Int? {
        switch v {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    /// `datetime.strftime` for the common directives (C locale).
    static func strftime(_ format: String, _ date: Date) throws -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone.current
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday], from: date)
        let months = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
                      "October", "November", "December"]
        let days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
        let (year, month, day) = (c.year!, c.month!, c.day!)
        let (hour, minute, second, weekday) = (c.hour!, c.minute!, c.second!, c.weekday!)
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        var out = ""
        var it = format.unicodeScalars.makeIterator()
        while let ch = it.next() {
            guard ch == "%" else { out.unicodeScalars.append(ch); continue }
            guard let d = it.next() else { out += "%"; break }
            switch d {
            case "Y": out += String(year)
            case "y": out += two(year % 100)
            case "m": out += two(month)
            case "d": out += two(day)
            case "-": // %-d, %-m: glibc's no-padding flag
                guard let e = it.next() else { out += "%-"; break }
                switch e {
                case "d": out += String(day)
                case "m": out += String(month)
                case "H": out += String(hour)
                default: throw JinjaFailure.unsupported("strftime directive '%-\(e)'")
                }
            case "H": out += two(hour)
            case "I": out += two(hour % 12 == 0 ? 12 : hour % 12)
            case "M": out += two(minute)
            case "S": out += two(second)
            case "p": out += hour < 12 ? "AM" : "PM"
            case "B": out += months[month - 1]
            case "b", "h": out += String(months[month - 1].prefix(3))
            case "A": out += days[weekday - 1]
            case "a": out += String(days[weekday - 1].prefix(3))
            case "j":
                let dayOfYear = calendar.ordinality(of: .day, in: .year, for: date) ?? 1
                out += String(repeating: "0", count: dayOfYear < 10 ? 2 : (dayOfYear < 100 ? 1 : 0)) + String(dayOfYear)
            case "%": out += "%"
            default: throw JinjaFailure.unsupported("strftime directive '%\(d)'")
            }
        }
        return out
    }

    // MARK: Iteration, attributes and items

    /// The items of a for loop, `|list`, `in`, unpacking.
    static func iterate(_ value: JinjaValue, unpacking: Bool = false) throws -> [JinjaValue] {
        switch value {
        case .list(let items), .tuple(let items), .iterator(let items): return items
        case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
        case .dict(let d): return d.keys
        case .range(let r): return r.items
        case .undefined: return []
        case .loop:
            // jinja2 would advance the running loop itself.
            throw JinjaFailure.unsupported("iterating over the 'loop' object")
        default:
            if unpacking {
                throw JinjaFailure.runtime("cannot unpack non-iterable \(JinjaPython.typeName(value)) object")
            }
            throw JinjaFailure.runtime("'\(JinjaPython.typeName(value))' object is not iterable")
        }
    }

    static let dictMethods: Set<String> = ["items", "keys", "values", "get", "copy"]
    static let dictMutators: Set<String> = ["clear", "pop", "popitem", "setdefault", "update", "fromkeys"]
    static let listMutators: Set<String> = ["append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort"]
    static let strMethodNames: Set<String> = [
        "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format",
        "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower",
        "isnumeric", "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip",
        "maketrans", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust",
        "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title",
        "translate", "upper", "zfill",
    ]

    static func unsafe(_ name: String, _ object: JinjaValue) -> JinjaValue {
        .undefined("access to attribute '\(name)' of '\(JinjaPython.typeName(object))' object is unsafe.")
    }

    static func noAttribute(_ object: JinjaValue, _ name: String) -> JinjaValue {
        .undefined("'\(JinjaPython.objectTypeRepr(object))' has no attribute '\(name)'")
    }

    /// The sandbox's `getattr`: a Python attribute first (a method), then the item of that name.
    static func getattr(_ object: JinjaValue, _ name: String) throws -> JinjaValue {
        if case .undefined(let u) = object { throw JinjaFailure.runtime(u.hint) }
        if name.hasPrefix("__") { return unsafe(name, object) }
        if let method = method(object, name) { return method }
        return item(object, .string(name)) ?? noAttribute(object, name)
    }

    /// The sandbox's `getitem`: the item first, then (for a string key) the attribute.
    static func getitem(_ object: JinjaValue, _ key: JinjaValue) throws -> JinjaValue {
        if case .undefined(let u) = object { throw JinjaFailure.runtime(u.hint) }
        if let value = item(object, key) { return value }
        if case .string(let name) = key {
            if name.hasPrefix("__") { return unsafe(name, object) }
            if let method = method(object, name) { return method }
            return noAttribute(object, name)
        }
        return .undefined("\(JinjaPython.objectTypeRepr(object)) has no element \((try? JinjaPython.repr(key)) ?? "?")")
    }

    /// `object[key]`, or nil where Python raises a LookupError or TypeError.
    static func item(_ object: JinjaValue, _ key: JinjaValue) -> JinjaValue? {
        switch object {
        case .dict(let d):
            return JinjaPython.isHashable(key) ? d[key] : nil
        case .list(let items), .tuple(let items):
            guard let i = integer(key) else { return nil }
            let j = i < 0 ? i + items.count : i
            return j >= 0 && j < items.count ? items[j] : nil
        case .string(let s):
            guard let i = integer(key) else { return nil }
            let scalars = JinjaPython.scalars(s)
            let j = i < 0 ? i + scalars.count : i
            return j >= 0 && j < scalars.count ? .string(String(scalars[j])) : nil
        case .range(let r):
            guard let i = integer(key) else { return nil }
            let j = i < 0 ? i + r.count : i
            return j >= 0 && j < r.count ? .int(r[j]) : nil
        case .namespace(let ns):
            return ns.attributes[key]
        case .loop(let l):
            guard case .string(let name) = key else { return nil }
            return l.attribute(name)
        default:
            return nil
        }
    }

    /// Python `object[start:stop:step]`. jinja2 compiles a slice to a plain Python subscript (not the
    /// sandbox's forgiving `getitem`), so slicing anything but a sequence raises.
    static func slice(_ object: JinjaValue, _ start: JinjaValue?, _ stop: JinjaValue?, _ step: JinjaValue?) throws -> JinjaValue {
        switch object {
        case .undefined(let u): throw JinjaFailure.runtime(u.hint)
        case .list, .tuple, .string, .range: break
        case .dict: throw JinjaFailure.runtime("unhashable type: 'slice'")
        default: throw JinjaFailure.runtime("'\(JinjaPython.typeName(object))' object is not subscriptable")
        }
        func index(_ v: JinjaValue?) -> Int?? {
            guard let v, !v.isNone else { return .some(nil) }
            guard let i = integer(v) else { return nil }
            return .some(i)
        }
        guard let a = index(start), let b = index(stop), let c = index(step) else {
            throw JinjaFailure.runtime("slice indices must be integers or None or have an __index__ method")
        }
        let stride = c ?? 1
        if stride == 0 { throw JinjaFailure.runtime("slice step cannot be zero") }
        /// Python's `slice.indices(count)`.
        func indices(_ count: Int) -> (start: Int, stop: Int) {
            func adjust(_ v: Int?, _ defaultValue: Int, _ low: Int, _ high: Int) -> Int {
                guard var v else { return defaultValue }
                if v < 0 { v += count; if v < 0 { v = low } } else if v > high { v = high }
                return v
            }
            if stride > 0 { return (adjust(a, 0, 0, count), adjust(b, count, 0, count)) }
            return (adjust(a, count - 1, -1, count - 1), adjust(b, -1, -1, count - 1))
        }
        func pick(_ count: Int) -> [Int] {
            let (start, stop) = indices(count)
            return Array(Swift.stride(from: start, to: stop, by: stride))
        }
        switch object {
        case .range(let r):
            let (start, stop) = indices(r.count)
            return .range(JinjaRange(start: r[start], stop: r[stop], step: r.step * stride))
        case .list(let items): return .list(pick(items.count).map { items[$0] })
        case .tuple(let items): return .tuple(pick(items.count).map { items[$0] })
        case .string(let s):
            let scalars = JinjaPython.scalars(s)
            return .string(JinjaPython.string(pick(scalars.count).map { scalars[$0] }))
        default:
            throw JinjaFailure.runtime("'\(JinjaPython.typeName(object))' object is not subscriptable")
        }
    }
}
