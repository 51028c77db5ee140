import Foundation

// jinja2's filters, tests and globals, the Python `str`/`dict`/`list` methods templates call, and the
// sandbox's attribute rules (transformers renders in an `ImmutableSandboxedEnvironment`: mutating
// methods such as `list.append` resolve to an Undefined that fails when called).

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

    private static func makeDict(_ function: String, _ args: JinjaArguments) throws -> JinjaDict {
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

    private static func integer(_ v: JinjaValue) -> Int? {
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

    private static let dictMethods: Set<String> = ["items", "keys", "values", "get", "copy"]
    private static let dictMutators: Set<String> = ["clear", "pop", "popitem", "setdefault", "update", "fromkeys"]
    private static let listMutators: Set<String> = ["append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort"]
    private static let strMethodNames: Set<String> = [
        "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format",
        "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower",
        "isnumeric", "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip",
        "maketrans", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust",
        "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title",
        "translate", "upper", "zfill",
    ]

    private static func unsafe(_ name: String, _ object: JinjaValue) -> JinjaValue {
        .undefined("access to attribute '\(name)' of '\(JinjaPython.typeName(object))' object is unsafe.")
    }

    private static func noAttribute(_ object: JinjaValue, _ name: String) -> JinjaValue {
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
    private static func item(_ object: JinjaValue, _ key: JinjaValue) -> JinjaValue? {
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

    // MARK: Methods

    private static func bound(_ name: String, _ body: @escaping (JinjaArguments) throws -> JinjaValue) -> JinjaValue {
        .callable(JinjaCallable(name: name, call: body))
    }

    private static func method(_ object: JinjaValue, _ name: String) -> JinjaValue? {
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

    private static func stringArgument(_ v: JinjaValue?, _ function: String) throws -> String? {
        guard let v, !v.isNone else { return nil }
        guard case .string(let s) = v else {
            throw JinjaFailure.runtime("\(function) arg must be None or str")
        }
        return s
    }

    private static func stringMethod(_ s: String, _ name: String, _ args: JinjaArguments) throws -> JinjaValue {
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

    private static func isLetterCategory(_ c: Unicode.Scalar) -> Bool {
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    private static func isCased(_ c: Unicode.Scalar) -> Bool {
        c.properties.isLowercase || c.properties.isUppercase || c.properties.generalCategory == .titlecaseLetter
    }

    /// Python's `islower`/`isupper`: at least one cased character, and none of the other case.
    private static func caseCheck(_ scalars: [Unicode.Scalar], lower: Bool) -> Bool {
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
    private static func format(_ s: String, _ args: JinjaArguments) throws -> String {
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

    private static func upper(_ c: Unicode.Scalar) -> String { c.properties.uppercaseMapping }
    private static func lower(_ c: Unicode.Scalar) -> String { c.properties.lowercaseMapping }

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

    // MARK: Tests

    /// Tests that take one argument besides the value; the others take none.
    private static let binaryTests: Set<String> = [
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
    private static func attributeGetter(_ attribute: JinjaValue?) throws -> ((JinjaValue) throws -> JinjaValue)? {
        guard let attribute, !attribute.isNone else { return nil }
        let parts: [JinjaValue]
        switch attribute {
        case .string(let s): parts = s.split(separator: ".", omittingEmptySubsequences: false).map { Int($0).map(JinjaValue.int) ?? .string(String($0)) }
        case .int: parts = [attribute]
        default: throw JinjaFailure.runtime("attribute must be a string or an integer")
        }
        return { item in try parts.reduce(item) { try getitem($0, $1) } }
    }

    private static func length(_ value: JinjaValue) throws -> Int {
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
    private static func sortKey(_ v: JinjaValue, caseSensitive: Bool) -> JinjaValue {
        if !caseSensitive, case .string(let s) = v { return .string(s.lowercased()) }
        return v
    }

    /// A stable sort with Python's `<` (raises on incomparable types, as Python's sort does).
    private static func sorted(_ items: [JinjaValue], keys: [JinjaValue], reverse: Bool) throws -> [JinjaValue] {
        let order = try items.indices.sorted { i, j in
            let c = try JinjaPython.compare(keys[i], keys[j], "<") ?? 0
            if c != 0 { return reverse ? c > 0 : c < 0 }
            return i < j
        }
        return order.map { items[$0] }
    }

    private static func selectOrReject(_ items: [JinjaValue], _ args: ArraySlice<JinjaValue>, _ keywords: [(String, JinjaValue)],
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

// MARK: - JSON

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
