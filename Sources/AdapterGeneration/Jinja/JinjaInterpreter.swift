import Foundation

// Walks the syntax tree and writes the output. Scoping follows what jinja2's compiler produces:
// - `{% set %}` writes to the innermost scope; `if` opens no scope, so a set inside an `if` is seen after it.
// - Each for-loop iteration runs in a fresh child scope: a set inside the body is gone at the next
//   iteration and after the loop (use `namespace()` to carry state out, as chat templates do).
// - A macro call runs in a child of the scope the macro was defined in, read at call time.

/// A variable scope; lookups fall back to the parent.
final class JinjaScope {
    var variables: [String: JinjaValue] = [:]
    let parent: JinjaScope?

    init(parent: JinjaScope?) { self.parent = parent }

    func lookup(_ name: String) -> JinjaValue? {
        var scope: JinjaScope? = self
        while let s = scope {
            if let v = s.variables[name] { return v }
            scope = s.parent
        }
        return nil
    }
}

final class JinjaInterpreter {
    private enum Flow { case normal, breakLoop, continueLoop }

    /// A macro's captured scope. Cleared after rendering, because the scope also holds the macro
    /// (a reference cycle).
    private final class MacroClosure {
        var scope: JinjaScope?
        init(scope: JinjaScope) { self.scope = scope }
    }

    /// Deeper macro recursion than this is an error rather than a stack overflow.
    static let maxCallDepth = 64
    /// Nested statements and expressions being evaluated at once (macro recursion multiplies the
    /// template's own depth). Python's recursion limit stops jinja2 in the same region.
    static let maxActiveDepth = 400

    private var closures: [MacroClosure] = []
    private var callDepth = 0
    private var activeDepth = 0

    private func enter() throws {
        activeDepth += 1
        if activeDepth > Self.maxActiveDepth {
            throw JinjaFailure.runtime("maximum recursion depth exceeded while rendering")
        }
    }

    func render(_ program: [JinjaStmt], scope: JinjaScope) throws -> String {
        defer {
            for closure in closures { closure.scope = nil }
            closures.removeAll()
        }
        var out = ""
        _ = try execute(program, scope, &out)
        return out
    }

    // MARK: Statements

    private func execute(_ body: [JinjaStmt], _ scope: JinjaScope, _ out: inout String) throws -> Flow {
        for statement in body {
            let flow = try execute(statement, scope, &out)
            if flow != .normal { return flow }
        }
        return .normal
    }

    private func located<T>(_ position: JinjaPosition, _ work: () throws -> T) throws -> T {
        do {
            return try work()
        } catch let failure as JinjaFailure {
            throw failure.located((position.line, position.column))
        }
    }

    private func execute(_ statement: JinjaStmt, _ scope: JinjaScope, _ out: inout String) throws -> Flow {
        try enter()
        defer { activeDepth -= 1 }
        switch statement {
        case .text(let text):
            out += text
        case .output(let expr, let position):
            out += try located(position) { try JinjaPython.str(try evaluate(expr, scope)) }
        case .conditional(let branches, let otherwise, let position):
            for (test, body) in branches where try located(position, { JinjaPython.truthy(try evaluate(test, scope)) }) {
                return try execute(body, scope, &out)
            }
            return try execute(otherwise, scope, &out)
        case .forLoop(let loop):
            return try executeFor(loop, scope, &out)
        case .assign(let target, let expr, let position):
            try located(position) { try assign(target, try evaluate(expr, scope), in: scope) }
        case .assignBlock(let target, let filter, let body, let position):
            var captured = ""
            _ = try execute(body, JinjaScope(parent: scope), &captured)
            try located(position) {
                var value = JinjaValue.string(captured)
                if let filter { value = try applyFilterChain(filter, to: value, scope) }
                try assign(target, value, in: scope)
            }
        case .macro(let definition):
            scope.variables[definition.name] = .callable(makeMacro(definition, scope))
        case .breakLoop:
            return .breakLoop
        case .continueLoop:
            return .continueLoop
        case .with(let bindings, let body, let position):
            let inner = JinjaScope(parent: scope)
            try located(position) {
                let values = try bindings.map { try evaluate($0.1, scope) }
                for ((target, _), value) in zip(bindings, values) { try assign(target, value, in: inner) }
            }
            return try execute(body, inner, &out)
        case .filterBlock(let filter, let body, let position):
            var captured = ""
            let flow = try execute(body, JinjaScope(parent: scope), &captured)
            out += try located(position) { try JinjaPython.str(try applyFilterChain(filter, to: .string(captured), scope)) }
            return flow
        case .scope(let body):
            return try execute(body, JinjaScope(parent: scope), &out)
        }
        return .normal
    }

    private func executeFor(_ loop: JinjaForLoop, _ scope: JinjaScope, _ out: inout String) throws -> Flow {
        var items = try located(loop.position) { try JinjaBuiltins.iterate(try evaluate(loop.iterable, scope)) }
        if let filter = loop.filter {
            items = try located(loop.position) {
                try items.filter { item in
                    let inner = JinjaScope(parent: scope)
                    try assign(loop.target, item, in: inner)
                    return JinjaPython.truthy(try evaluate(filter, inner))
                }
            }
        }
        // jinja2 clears its "no iteration" flag at the end of the loop body, so `{% break %}` and
        // `{% continue %}` skip it: the else block runs unless some iteration ran its body to the end.
        var completedAnIteration = false
        for (i, item) in items.enumerated() {
            let inner = JinjaScope(parent: scope)
            try located(loop.position) { try assign(loop.target, item, in: inner) }
            inner.variables["loop"] = .loop(JinjaLoop(items: items, index0: i, depth0: 0))
            let flow = try execute(loop.body, inner, &out)
            if flow == .breakLoop { break }
            if flow == .normal { completedAnIteration = true }
        }
        if !completedAnIteration { return try execute(loop.otherwise, JinjaScope(parent: scope), &out) }
        return .normal
    }

    private func assign(_ target: JinjaTarget, _ value: JinjaValue, in scope: JinjaScope) throws {
        switch target {
        case .name(let name):
            scope.variables[name] = value
        case .tuple(let targets):
            let items = try JinjaBuiltins.iterate(value, unpacking: true)
            if items.count < targets.count {
                throw JinjaFailure.runtime("not enough values to unpack (expected \(targets.count), got \(items.count))")
            }
            if items.count > targets.count {
                throw JinjaFailure.runtime("too many values to unpack (expected \(targets.count))")
            }
            for (t, v) in zip(targets, items) { try assign(t, v, in: scope) }
        case .namespaceAttribute(let name, let attribute):
            guard case .namespace(let ns)? = scope.lookup(name) else {
                throw JinjaFailure.runtime("cannot assign attribute on non-namespace object")
            }
            ns.attributes[.string(attribute)] = value
        }
    }

    private func makeMacro(_ definition: JinjaMacroDefinition, _ scope: JinjaScope) -> JinjaCallable {
        let closure = MacroClosure(scope: scope)
        closures.append(closure)
        return JinjaCallable(name: definition.name) { [unowned self] arguments in
            guard let definingScope = closure.scope else {
                throw JinjaFailure.runtime("macro '\(definition.name)' called after rendering finished")
            }
            let parameters = definition.parameters
            if arguments.positional.count > parameters.count {
                throw JinjaFailure.runtime("macro '\(definition.name)' takes not more than \(parameters.count) argument(s)")
            }
            for (key, _) in arguments.keywords where !parameters.contains(where: { $0.0 == key }) {
                throw JinjaFailure.runtime("macro '\(definition.name)' takes no keyword argument '\(key)'")
            }
            guard self.callDepth < Self.maxCallDepth else {
                throw JinjaFailure.runtime("maximum macro recursion depth (\(Self.maxCallDepth)) exceeded")
            }
            self.callDepth += 1
            defer { self.callDepth -= 1 }
            let inner = JinjaScope(parent: definingScope)
            for (i, (name, defaultValue)) in parameters.enumerated() {
                if i < arguments.positional.count {
                    inner.variables[name] = arguments.positional[i]
                } else if let value = arguments.keywords.last(where: { $0.0 == name })?.1 {
                    inner.variables[name] = value
                } else if let defaultValue {
                    inner.variables[name] = try self.evaluate(defaultValue, inner)
                } else {
                    inner.variables[name] = .undefined("parameter '\(name)' was not provided")
                }
            }
            var out = ""
            _ = try self.execute(definition.body, inner, &out)
            return .string(out)
        }
    }

    // MARK: Expressions

    func evaluate(_ expr: JinjaExpr, _ scope: JinjaScope) throws -> JinjaValue {
        try enter()
        defer { activeDepth -= 1 }
        switch expr {
        case .literal(let literal):
            switch literal {
            case .none: return .none
            case .bool(let b): return .bool(b)
            case .int(let i): return .int(i)
            case .double(let d): return .double(d)
            case .string(let s): return .string(s)
            }
        case .name(let name):
            return scope.lookup(name) ?? .undefined("'\(name)' is undefined")
        case .list(let items):
            return .list(try items.map { try evaluate($0, scope) })
        case .tuple(let items):
            return .tuple(try items.map { try evaluate($0, scope) })
        case .dict(let pairs):
            var dict = JinjaDict()
            for (k, v) in pairs {
                let key = try evaluate(k, scope)
                guard JinjaPython.isHashable(key) else {
                    throw JinjaFailure.runtime("unhashable type: '\(JinjaPython.typeName(key))'")
                }
                dict[key] = try evaluate(v, scope)
            }
            return .dict(dict)
        case .getattr(let object, let name):
            return try JinjaBuiltins.getattr(try evaluate(object, scope), name)
        case .getitem(let object, .slice(let start, let stop, let step)):
            let value = try evaluate(object, scope)
            return try JinjaBuiltins.slice(value, try start.map { try evaluate($0, scope) },
                                           try stop.map { try evaluate($0, scope) }, try step.map { try evaluate($0, scope) })
        case .getitem(let object, let key):
            return try JinjaBuiltins.getitem(try evaluate(object, scope), try evaluate(key, scope))
        case .slice:
            throw JinjaFailure.runtime("a slice is only valid inside []")
        case .call(let callee, let arguments, let position):
            let function = try evaluate(callee, scope)
            let values = try evaluateArguments(arguments, scope)
            return try located(position) { try call(function, values) }
        case .filter(let input, let name, let arguments, let position):
            guard let input else { throw JinjaFailure.runtime("filter '\(name)' has no input") }
            let value = try evaluate(input, scope)
            let values = try evaluateArguments(arguments, scope)
            return try located(position) { try JinjaBuiltins.filter(name, value, values) }
        case .test(let input, let name, let arguments, let position):
            let value = try evaluate(input, scope)
            let values = try evaluateArguments(arguments, scope)
            return try located(position) { .bool(try JinjaBuiltins.test(name, value, values)) }
        case .not(let operand):
            return .bool(!JinjaPython.truthy(try evaluate(operand, scope)))
        case .negative(let operand):
            return try JinjaOperators.negate(try evaluate(operand, scope))
        case .positive(let operand):
            return try JinjaOperators.positive(try evaluate(operand, scope))
        case .binary(let op, let left, let right):
            return try JinjaOperators.binary(op, try evaluate(left, scope), try evaluate(right, scope))
        case .concat(let items):
            var text = ""
            for item in items { text += try JinjaPython.str(try evaluate(item, scope)) }
            return .string(text)
        case .compare(let first, let operations):
            var left = try evaluate(first, scope)
            for (op, rightExpr) in operations {
                let right = try evaluate(rightExpr, scope)
                if !(try JinjaOperators.compare(op, left, right)) { return .bool(false) }
                left = right
            }
            return .bool(true)
        case .and(let left, let right):
            let l = try evaluate(left, scope)
            return JinjaPython.truthy(l) ? try evaluate(right, scope) : l
        case .or(let left, let right):
            let l = try evaluate(left, scope)
            return JinjaPython.truthy(l) ? l : try evaluate(right, scope)
        case .conditional(let test, let then, let otherwise):
            if JinjaPython.truthy(try evaluate(test, scope)) { return try evaluate(then, scope) }
            if let otherwise { return try evaluate(otherwise, scope) }
            return .undefined("the inline if-expression evaluated to false and no else section was defined.")
        }
    }

    private func evaluateArguments(_ arguments: JinjaCallArguments, _ scope: JinjaScope) throws -> JinjaArguments {
        JinjaArguments(positional: try arguments.positional.map { try evaluate($0, scope) },
                       keywords: try arguments.keywords.map { ($0.0, try evaluate($0.1, scope)) })
    }

    private func call(_ function: JinjaValue, _ arguments: JinjaArguments) throws -> JinjaValue {
        switch function {
        case .callable(let callable): return try callable.call(arguments)
        case .undefined(let u): throw JinjaFailure.runtime(u.hint)
        default: throw JinjaFailure.runtime("'\(JinjaPython.typeName(function))' object is not callable")
        }
    }

    /// Applies a filter chain whose innermost input is nil (`{% filter %}`, `{% set x | f %}`) to `value`.
    private func applyFilterChain(_ chain: JinjaExpr, to value: JinjaValue, _ scope: JinjaScope) throws -> JinjaValue {
        guard case .filter(let input, let name, let arguments, let position) = chain else { return value }
        let inner = try input.map { try applyFilterChain($0, to: value, scope) } ?? value
        let values = try evaluateArguments(arguments, scope)
        return try located(position) { try JinjaBuiltins.filter(name, inner, values) }
    }
}

// MARK: - Operators

/// Python's arithmetic on Jinja values. Integers are 64-bit: where Python would grow a big integer,
/// this reports an error instead.
enum JinjaOperators {
    /// Refuse to build strings or lists longer than this with `*`.
    static let maxRepeatedLength = 10_000_000

    private static func undefinedCheck(_ values: JinjaValue...) throws {
        for case .undefined(let u) in values { throw JinjaFailure.runtime(u.hint) }
    }

    private static func unsupported(_ op: String, _ a: JinjaValue, _ b: JinjaValue) -> JinjaFailure {
        .runtime("unsupported operand type(s) for \(op): '\(JinjaPython.typeName(a))' and '\(JinjaPython.typeName(b))'")
    }

    private static func asInt(_ v: JinjaValue) -> Int? {
        switch v {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    private static func asDouble(_ v: JinjaValue) -> Double? {
        switch v {
        case .int(let i): return Double(i)
        case .bool(let b): return b ? 1 : 0
        case .double(let d): return d
        default: return nil
        }
    }

    private static func overflow() -> JinjaFailure { .unsupported("integer arithmetic beyond 64 bits") }

    static func negate(_ v: JinjaValue) throws -> JinjaValue {
        try undefinedCheck(v)
        if let i = asInt(v) {
            guard i != .min else { throw overflow() }
            return .int(-i)
        }
        if case .double(let d) = v { return .double(-d) }
        throw JinjaFailure.runtime("bad operand type for unary -: '\(JinjaPython.typeName(v))'")
    }

    static func positive(_ v: JinjaValue) throws -> JinjaValue {
        try undefinedCheck(v)
        if let i = asInt(v) { return .int(i) }
        if case .double = v { return v }
        throw JinjaFailure.runtime("bad operand type for unary +: '\(JinjaPython.typeName(v))'")
    }

    static func binary(_ op: JinjaBinaryOperator, _ a: JinjaValue, _ b: JinjaValue) throws -> JinjaValue {
        // `str % x` is str.__mod__, which takes any right operand (an Undefined prints as "").
        if op == .mod, case .string(let format) = a { return .string(try JinjaPrintf.format(format, b)) }
        try undefinedCheck(a, b)
        switch op {
        case .add:
            if let x = asInt(a), let y = asInt(b) {
                let (r, o) = x.addingReportingOverflow(y)
                if o { throw overflow() }
                return .int(r)
            }
            if let x = asDouble(a), let y = asDouble(b) { return .double(x + y) }
            switch (a, b) {
            case (.string(let x), .string(let y)): return .string(x + y)
            case (.list(let x), .list(let y)): return .list(x + y)
            case (.tuple(let x), .tuple(let y)): return .tuple(x + y)
            case (.string, _):
                throw JinjaFailure.runtime("can only concatenate str (not \"\(JinjaPython.typeName(b))\") to str")
            default: throw unsupported("+", a, b)
            }
        case .sub:
            if let x = asInt(a), let y = asInt(b) {
                let (r, o) = x.subtractingReportingOverflow(y)
                if o { throw overflow() }
                return .int(r)
            }
            if let x = asDouble(a), let y = asDouble(b) { return .double(x - y) }
            throw unsupported("-", a, b)
        case .mul:
            if let x = asInt(a), let y = asInt(b) {
                let (r, o) = x.multipliedReportingOverflow(by: y)
                if o { throw overflow() }
                return .int(r)
            }
            if let x = asDouble(a), let y = asDouble(b) { return .double(x * y) }
            switch (a, b) {
            case (.string(let s), _) where asInt(b) != nil: return .string(try repeated(s, asInt(b)!))
            case (_, .string(let s)) where asInt(a) != nil: return .string(try repeated(s, asInt(a)!))
            case (.list(let l), _) where asInt(b) != nil: return .list(try repeated(l, asInt(b)!))
            case (_, .list(let l)) where asInt(a) != nil: return .list(try repeated(l, asInt(a)!))
            case (.tuple(let l), _) where asInt(b) != nil: return .tuple(try repeated(l, asInt(b)!))
            case (_, .tuple(let l)) where asInt(a) != nil: return .tuple(try repeated(l, asInt(a)!))
            default: throw unsupported("*", a, b)
            }
        case .div:
            guard let x = asDouble(a), let y = asDouble(b) else { throw unsupported("/", a, b) }
            if y == 0 { throw JinjaFailure.runtime("division by zero") }
            return .double(x / y)
        case .floorDiv, .mod:
            if let x = asInt(a), let y = asInt(b) {
                if y == 0 { throw JinjaFailure.runtime(op == .mod ? "integer modulo by zero" : "integer division or modulo by zero") }
                if x == .min && y == -1 { throw overflow() }
                var q = x / y, r = x % y
                if r != 0 && ((r < 0) != (y < 0)) { q -= 1; r += y }
                return .int(op == .mod ? r : q)
            }
            guard let x = asDouble(a), let y = asDouble(b) else { throw unsupported(op.rawValue, a, b) }
            if y == 0 { throw JinjaFailure.runtime("float divmod()") }
            let (q, r) = floatDivMod(x, y)
            return .double(op == .mod ? r : q)
        case .pow:
            if let x = asInt(a), let y = asInt(b), y >= 0 {
                var result = 1, base = x, e = y
                while e > 0 {
                    if e & 1 == 1 {
                        let (r, o) = result.multipliedReportingOverflow(by: base)
                        if o { throw overflow() }
                        result = r
                    }
                    e >>= 1
                    if e > 0 {
                        let (s, o) = base.multipliedReportingOverflow(by: base)
                        if o { throw overflow() }
                        base = s
                    }
                }
                return .int(result)
            }
            guard let x = asDouble(a), let y = asDouble(b) else { throw unsupported("** or pow()", a, b) }
            if x == 0 && y < 0 { throw JinjaFailure.runtime("0.0 cannot be raised to a negative power") }
            return .double(Foundation.pow(x, y))
        }
    }

    /// CPython's `_float_div_mod`.
    private static func floatDivMod(_ vx: Double, _ wx: Double) -> (Double, Double) {
        var mod = fmod(vx, wx)
        var div = (vx - mod) / wx
        if mod != 0 {
            if (wx < 0) != (mod < 0) { mod += wx; div -= 1 }
        } else {
            mod = copysign(0, wx)
        }
        var floordiv: Double
        if div != 0 {
            floordiv = div.rounded(.down)
            if div - floordiv > 0.5 { floordiv += 1 }
        } else {
            floordiv = copysign(0, vx / wx)
        }
        return (floordiv, mod)
    }

    private static func repeated(_ s: String, _ n: Int) throws -> String {
        guard n > 0 else { return "" }
        guard s.unicodeScalars.count.multipliedReportingOverflow(by: n).partialValue <= maxRepeatedLength else {
            throw JinjaFailure.unsupported("strings longer than \(maxRepeatedLength) characters")
        }
        return String(repeating: s, count: n)
    }

    private static func repeated(_ l: [JinjaValue], _ n: Int) throws -> [JinjaValue] {
        guard n > 0 else { return [] }
        guard l.count.multipliedReportingOverflow(by: n).partialValue <= maxRepeatedLength else {
            throw JinjaFailure.unsupported("lists longer than \(maxRepeatedLength) items")
        }
        return Array([[JinjaValue]](repeating: l, count: n).joined())
    }

    static func compare(_ op: JinjaCompareOperator, _ a: JinjaValue, _ b: JinjaValue) throws -> Bool {
        switch op {
        case .eq: return JinjaPython.equals(a, b)
        case .ne: return !JinjaPython.equals(a, b)
        case .in: return try contains(b, a)
        case .notIn: return !(try contains(b, a))
        case .lt, .le, .gt, .ge:
            guard let c = try JinjaPython.compare(a, b, op.rawValue) else { return false }
            switch op {
            case .lt: return c < 0
            case .le: return c <= 0
            case .gt: return c > 0
            default: return c >= 0
            }
        }
    }

    /// Python's `item in container`.
    static func contains(_ container: JinjaValue, _ item: JinjaValue) throws -> Bool {
        switch container {
        case .string(let s):
            guard case .string(let needle) = item else {
                throw JinjaFailure.runtime("'in <string>' requires string as left operand, not \(JinjaPython.typeName(item))")
            }
            return JinjaPython.find(JinjaPython.scalars(s), JinjaPython.scalars(needle)) != nil
        case .list(let items), .tuple(let items), .iterator(let items):
            return items.contains { JinjaPython.equals($0, item) }
        case .range(let r):
            return r.items.contains { JinjaPython.equals($0, item) }
        case .dict(let d):
            guard JinjaPython.isHashable(item) else {
                throw JinjaFailure.runtime("unhashable type: '\(JinjaPython.typeName(item))'")
            }
            return d[item] != nil
        case .undefined:
            return false
        default:
            throw JinjaFailure.runtime("argument of type '\(JinjaPython.typeName(container))' is not iterable")
        }
    }
}
