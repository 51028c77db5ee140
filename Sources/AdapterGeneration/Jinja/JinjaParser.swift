// A recursive-descent parser that follows `jinja2/parser.py` method for method, so precedence and the
// places where a tuple, a conditional expression or a filter may appear are the same:
//
//   condexpr  := or ('if' or ('else' condexpr)?)*
//   or        := and ('or' and)*          and := not ('and' not)*       not := 'not' not | compare
//   compare   := math1 (('=='|'!='|'<'|'<='|'>'|'>='|'in'|'not' 'in') math1)*
//   math1     := concat (('+'|'-') concat)*                             concat := math2 ('~' math2)*
//   math2     := pow (('*'|'/'|'//'|'%') pow)*                          pow := unary ('**' unary)*
//   unary     := ('-'|'+') unary-without-filters | primary, then postfix (. [] ()), then filters and tests
//
// So `a + b | trim` filters only `b`, `-1 | abs` is `abs(-1)`, and `not x is defined` is `not (x is defined)`.

struct JinjaParser {
    private var tokens: [JinjaToken]
    private var index = 0
    /// Tags opened and not yet closed, for end-of-template messages.
    private var tagStack: [String] = []
    private var endTokenStack: [[String]] = []
    private var loopDepth = 0
    /// An upper bound on the depth of the tree being built: one level per nested expression or block
    /// and per link of an operator chain (`a + b + c` is two levels deep).
    private var depth = 0

    /// The interpreter recurses once per level of the tree, so deeper templates are refused rather than
    /// risking the stack (debug builds use about 5 KB per level). Real templates need about 20.
    static let maxDepth = 100

    static func parse(_ source: String) throws -> [JinjaStmt] {
        var parser = JinjaParser(tokens: try JinjaLexer.tokenize(source))
        return try parser.subparse(nil)
    }

    private init(tokens: [JinjaToken]) { self.tokens = tokens }

    // MARK: Token stream

    private var current: JinjaToken { tokens[index] }
    private var look: JinjaToken { tokens[min(index + 1, tokens.count - 1)] }
    private var position: JinjaPosition { JinjaPosition(line: current.line, column: current.column) }

    @discardableResult
    private mutating func advance() -> JinjaToken {
        let token = tokens[index]
        if index < tokens.count - 1 { index += 1 }
        return token
    }

    private mutating func descend() throws {
        depth += 1
        if depth > Self.maxDepth {
            throw JinjaFailure.unsupported("expressions or blocks nested deeper than \(Self.maxDepth) levels")
                .located((current.line, current.column))
        }
    }

    private func isName(_ token: JinjaToken, _ name: String) -> Bool { token.kind == .name && token.text == name }
    private func isOp(_ token: JinjaToken, _ op: String) -> Bool { token.kind == .op && token.text == op }

    private mutating func skipName(_ name: String) -> Bool {
        if isName(current, name) { advance(); return true }
        return false
    }

    private mutating func skipOp(_ op: String) -> Bool {
        if isOp(current, op) { advance(); return true }
        return false
    }

    private func fail(_ message: String, at token: JinjaToken? = nil) -> JinjaFailure {
        let t = token ?? current
        return .syntax(message, line: t.line, column: t.column)
    }

    private func unexpected(expected: String) -> JinjaFailure {
        if current.kind == .eof { return fail("unexpected end of template, expected '\(expected)'.") }
        return fail("expected token '\(expected)', got '\(current.description)'")
    }

    private mutating func expectOp(_ op: String) throws {
        guard isOp(current, op) else { throw unexpected(expected: op) }
        advance()
    }

    private mutating func expectName(_ name: String? = nil) throws -> JinjaToken {
        guard current.kind == .name, name == nil || current.text == name else { throw unexpected(expected: name ?? "name") }
        return advance()
    }

    private mutating func expect(_ kind: JinjaToken.Kind, _ description: String) throws {
        guard current.kind == kind else { throw unexpected(expected: description) }
        advance()
    }

    // MARK: Statements

    private mutating func subparse(_ endTokens: [String]?) throws -> [JinjaStmt] {
        var body: [JinjaStmt] = []
        if let endTokens { endTokenStack.append(endTokens) }
        defer { if endTokens != nil { endTokenStack.removeLast() } }
        while current.kind != .eof {
            switch current.kind {
            case .data:
                body.append(.text(advance().text))
            case .variableBegin:
                advance()
                let pos = position
                body.append(.output(try parseTuple(withConditional: true), pos))
                try expect(.variableEnd, "end of print statement")
            case .blockBegin:
                advance()
                if let endTokens, current.kind == .name, endTokens.contains(current.text) { return body }
                body.append(contentsOf: try parseStatement())
                try expect(.blockEnd, "end of statement block")
            default:
                throw fail("unexpected '\(current.description)'")
            }
        }
        return body
    }

    /// Parses `: %}` then a body up to one of `endTokens`, leaving the end tag's name as the current token.
    private mutating func parseStatements(_ endTokens: [String], dropNeedle: Bool = false) throws -> [JinjaStmt] {
        try descend()
        defer { depth -= 1 }
        _ = skipOp(":")
        try expect(.blockEnd, "end of statement block")
        let body = try subparse(endTokens)
        if current.kind == .eof { throw failEndOfTemplate(name: nil, extra: endTokens) }
        if dropNeedle { advance() }
        return body
    }

    private func failEndOfTemplate(name: String?, extra: [String]? = nil) -> JinjaFailure {
        var stack = endTokenStack
        if let extra { stack.append(extra) }
        var message = name.map { "Encountered unknown tag '\($0)'." } ?? "Unexpected end of template."
        if let looking = stack.last {
            let list = looking.map { "'\($0)'" }.joined(separator: " or ")
            if let name, stack.contains(where: { $0.contains(name) }) {
                message += " You probably made a nesting mistake. Jinja is expecting this tag, but currently looking for \(list)."
            } else {
                message += " Jinja was looking for the following tags: \(list)."
            }
        }
        if let innermost = tagStack.last { message += " The innermost block that needs to be closed is '\(innermost)'." }
        return fail(message)
    }

    private mutating func parseStatement() throws -> [JinjaStmt] {
        let token = current
        guard token.kind == .name else { throw fail("tag name expected") }
        let pos = position
        tagStack.append(token.text)
        defer { tagStack.removeLast() }
        switch token.text {
        case "if": return [try parseIf()]
        case "for": return [try parseFor()]
        case "set": return [try parseSet()]
        case "macro": return [try parseMacro()]
        case "with": return [try parseWith()]
        case "filter":
            advance()
            let filter = try parseFilter(nil, startInline: true)!
            let body = try parseStatements(["endfilter"], dropNeedle: true)
            return [.filterBlock(filter, body, pos)]
        case "print":
            advance()
            var outputs: [JinjaStmt] = []
            while current.kind != .blockEnd {
                if !outputs.isEmpty { try expectOp(",") }
                let at = position
                outputs.append(.output(try parseExpression(), at))
            }
            return outputs
        case "break", "continue":
            advance()
            guard loopDepth > 0 else { throw fail("'\(token.text)' outside of a loop", at: token) }
            return [token.text == "break" ? .breakLoop : .continueLoop]
        case "generation":
            // transformers' AssistantTracker extension: marks assistant text, renders its body unchanged.
            advance()
            return [.scope(try parseStatements(["endgeneration"], dropNeedle: true))]
        case "block", "extends", "include", "import", "from", "call", "autoescape":
            throw JinjaFailure.unsupported("the '\(token.text)' tag").located((token.line, token.column))
        default:
            // Reported as jinja2 does, without the unknown tag itself on the stack of open blocks.
            tagStack.removeLast()
            let failure = failEndOfTemplate(name: token.text)
            tagStack.append(token.text)
            throw failure
        }
    }

    private mutating func parseIf() throws -> JinjaStmt {
        let pos = position
        advance()
        var branches: [(JinjaExpr, [JinjaStmt])] = []
        var otherwise: [JinjaStmt] = []
        while true {
            let test = try parseTuple(withConditional: false)
            let body = try parseStatements(["elif", "else", "endif"])
            branches.append((test, body))
            let token = advance()
            if token.text == "elif" { continue }
            if token.text == "else" { otherwise = try parseStatements(["endif"], dropNeedle: true) }
            break
        }
        return .conditional(branches, otherwise, pos)
    }

    private mutating func parseFor() throws -> JinjaStmt {
        let pos = position
        advance()
        let target = try parseAssignTarget(extraEndRules: ["in"])
        _ = try expectName("in")
        let iterable = try parseTuple(withConditional: false, extraEndRules: ["recursive"])
        var filter: JinjaExpr?
        if skipName("if") { filter = try parseExpression() }
        if isName(current, "recursive") {
            throw JinjaFailure.unsupported("recursive for loops").located((current.line, current.column))
        }
        loopDepth += 1
        let body = try parseStatements(["endfor", "else"])
        loopDepth -= 1
        var otherwise: [JinjaStmt] = []
        if advance().text != "endfor" {
            otherwise = try parseStatements(["endfor"], dropNeedle: true)
        }
        return .forLoop(JinjaForLoop(target: target, iterable: iterable, filter: filter, body: body,
                                     otherwise: otherwise, position: pos))
    }

    private mutating func parseSet() throws -> JinjaStmt {
        let pos = position
        advance()
        let target = try parseAssignTarget(withNamespace: true)
        if skipOp("=") {
            return .assign(target, try parseTuple(withConditional: true), pos)
        }
        let filter = try parseFilter(nil)
        let body = try parseStatements(["endset"], dropNeedle: true)
        return .assignBlock(target, filter, body, pos)
    }

    private mutating func parseWith() throws -> JinjaStmt {
        let pos = position
        advance()
        var bindings: [(JinjaTarget, JinjaExpr)] = []
        while current.kind != .blockEnd {
            if !bindings.isEmpty { try expectOp(",") }
            let target = try parseAssignTarget()
            try expectOp("=")
            bindings.append((target, try parseExpression()))
        }
        let body = try parseStatements(["endwith"], dropNeedle: true)
        return .with(bindings, body, pos)
    }

    private mutating func parseMacro() throws -> JinjaStmt {
        let pos = position
        advance()
        let name = try expectName().text
        var parameters: [(String, JinjaExpr?)] = []
        try expectOp("(")
        while !isOp(current, ")") {
            if !parameters.isEmpty { try expectOp(",") }
            let parameter = try expectName().text
            if skipOp("=") {
                parameters.append((parameter, try parseExpression()))
            } else if parameters.contains(where: { $0.1 != nil }) {
                throw fail("non-default argument follows default argument")
            } else {
                parameters.append((parameter, nil))
            }
        }
        try expectOp(")")
        // A macro body is its own function: `break` inside it cannot reach an enclosing loop.
        let savedDepth = loopDepth
        loopDepth = 0
        defer { loopDepth = savedDepth }
        let body = try parseStatements(["endmacro"], dropNeedle: true)
        return .macro(JinjaMacroDefinition(name: name, parameters: parameters, body: body, position: pos))
    }

    /// `parse_assign_target`: names, `ns.attr` (in `set`) and tuples of them.
    private mutating func parseAssignTarget(extraEndRules: [String] = [], withNamespace: Bool = false) throws -> JinjaTarget {
        var items: [JinjaTarget] = []
        var isTuple = false
        while true {
            if !items.isEmpty { try expectOp(",") }
            if isTupleEnd(extraEndRules) { break }
            items.append(try parseTargetPrimary(withNamespace: withNamespace))
            if isOp(current, ",") { isTuple = true } else { break }
        }
        if !isTuple {
            guard let first = items.first else {
                throw fail("Expected an expression, got '\(current.description)'")
            }
            return first
        }
        return .tuple(items)
    }

    private mutating func parseTargetPrimary(withNamespace: Bool) throws -> JinjaTarget {
        let token = current
        if token.kind == .name {
            advance()
            if ["true", "false", "True", "False", "none", "None"].contains(token.text) {
                throw fail("can't assign to 'const'", at: token)
            }
            if withNamespace && isOp(current, ".") {
                advance()
                return .namespaceAttribute(token.text, try expectName().text)
            }
            return .name(token.text)
        }
        if isOp(token, "(") {
            advance()
            let inner = try parseAssignTarget(extraEndRules: [], withNamespace: withNamespace)
            try expectOp(")")
            return inner
        }
        _ = try parsePrimary()
        throw fail("can't assign to this expression", at: token)
    }

    // MARK: Expressions

    private func isTupleEnd(_ extraEndRules: [String]) -> Bool {
        switch current.kind {
        case .variableEnd, .blockEnd: return true
        case .op where current.text == ")": return true
        case .name where extraEndRules.contains(current.text): return true
        default: return false
        }
    }

    /// `parse_tuple`: one expression, or a tuple when commas follow.
    private mutating func parseTuple(withConditional: Bool, extraEndRules: [String] = [],
                                     explicitParentheses: Bool = false) throws -> JinjaExpr {
        var items: [JinjaExpr] = []
        var isTuple = false
        while true {
            if !items.isEmpty { try expectOp(",") }
            if isTupleEnd(extraEndRules) { break }
            items.append(try parseExpression(withConditional: withConditional))
            if isOp(current, ",") { isTuple = true } else { break }
        }
        if !isTuple {
            if let first = items.first { return first }
            if !explicitParentheses { throw fail("Expected an expression, got '\(current.description)'") }
        }
        return .tuple(items)
    }

    private mutating func parseExpression(withConditional: Bool = true) throws -> JinjaExpr {
        try descend()
        defer { depth -= 1 }
        return withConditional ? try parseConditional() : try parseOr()
    }

    private mutating func parseConditional() throws -> JinjaExpr {
        var expr = try parseOr()
        var links = 0
        defer { depth -= links }
        while skipName("if") {
            try descend()
            links += 1
            let test = try parseOr()
            let otherwise: JinjaExpr? = skipName("else") ? try parseConditional() : nil
            expr = .conditional(test: test, then: expr, otherwise: otherwise)
        }
        return expr
    }

    private mutating func parseOr() throws -> JinjaExpr {
        var left = try parseAnd()
        var links = 0
        defer { depth -= links }
        while skipName("or") {
            try descend()
            links += 1
            left = .or(left, try parseAnd())
        }
        return left
    }

    private mutating func parseAnd() throws -> JinjaExpr {
        var left = try parseNot()
        var links = 0
        defer { depth -= links }
        while skipName("and") {
            try descend()
            links += 1
            left = .and(left, try parseNot())
        }
        return left
    }

    private mutating func parseNot() throws -> JinjaExpr {
        if skipName("not") {
            try descend()
            defer { depth -= 1 }
            return .not(try parseNot())
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws -> JinjaExpr {
        let expr = try parseMath1()
        var operations: [(JinjaCompareOperator, JinjaExpr)] = []
        while true {
            if current.kind == .op, let op = JinjaCompareOperator(rawValue: current.text), op != .in, op != .notIn {
                advance()
                operations.append((op, try parseMath1()))
            } else if skipName("in") {
                operations.append((.in, try parseMath1()))
            } else if isName(current, "not") && isName(look, "in") {
                advance(); advance()
                operations.append((.notIn, try parseMath1()))
            } else {
                break
            }
        }
        return operations.isEmpty ? expr : .compare(expr, operations)
    }

    private mutating func parseMath1() throws -> JinjaExpr {
        var left = try parseConcat()
        var links = 0
        defer { depth -= links }
        while current.kind == .op, current.text == "+" || current.text == "-" {
            try descend()
            links += 1
            let op: JinjaBinaryOperator = advance().text == "+" ? .add : .sub
            left = .binary(op, left, try parseConcat())
        }
        return left
    }

    private mutating func parseConcat() throws -> JinjaExpr {
        var items = [try parseMath2()]
        while skipOp("~") { items.append(try parseMath2()) }
        return items.count == 1 ? items[0] : .concat(items)
    }

    private mutating func parseMath2() throws -> JinjaExpr {
        var left = try parsePow()
        var links = 0
        defer { depth -= links }
        while current.kind == .op, let op = JinjaBinaryOperator(rawValue: current.text),
              [.mul, .div, .floorDiv, .mod].contains(op) {
            try descend()
            links += 1
            advance()
            left = .binary(op, left, try parsePow())
        }
        return left
    }

    private mutating func parsePow() throws -> JinjaExpr {
        var left = try parseUnary()
        var links = 0
        defer { depth -= links }
        while skipOp("**") {
            try descend()
            links += 1
            left = .binary(.pow, left, try parseUnary())
        }
        return left
    }

    private mutating func parseUnary(withFilter: Bool = true) throws -> JinjaExpr {
        var node: JinjaExpr
        try descend()
        defer { depth -= 1 }
        if skipOp("-") {
            node = .negative(try parseUnary(withFilter: false))
        } else if skipOp("+") {
            node = .positive(try parseUnary(withFilter: false))
        } else {
            node = try parsePrimary()
        }
        node = try parsePostfix(node)
        if withFilter { node = try parseFilterExpression(node) }
        return node
    }

    private mutating func parsePrimary() throws -> JinjaExpr {
        let token = current
        switch token.kind {
        case .name:
            advance()
            switch token.text {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(token.text)
            }
        case .string:
            // Adjacent string literals concatenate, as in Python.
            var text = advance().text
            while current.kind == .string { text += advance().text }
            return .literal(.string(text))
        case .integer:
            advance()
            return .literal(.int(token.integer))
        case .float:
            advance()
            return .literal(.double(token.float))
        case .op where token.text == "(":
            advance()
            let inner = try parseTuple(withConditional: true, explicitParentheses: true)
            try expectOp(")")
            return inner
        case .op where token.text == "[":
            advance()
            var items: [JinjaExpr] = []
            while !isOp(current, "]") {
                if !items.isEmpty { try expectOp(",") }
                if isOp(current, "]") { break }
                items.append(try parseExpression())
            }
            try expectOp("]")
            return .list(items)
        case .op where token.text == "{":
            advance()
            var pairs: [(JinjaExpr, JinjaExpr)] = []
            while !isOp(current, "}") {
                if !pairs.isEmpty { try expectOp(",") }
                if isOp(current, "}") { break }
                let key = try parseExpression()
                try expectOp(":")
                pairs.append((key, try parseExpression()))
            }
            try expectOp("}")
            return .dict(pairs)
        default:
            throw fail("unexpected '\(token.description)'")
        }
    }

    private mutating func parsePostfix(_ start: JinjaExpr) throws -> JinjaExpr {
        var node = start
        var links = 0
        defer { depth -= links }
        while true {
            try descend()
            links += 1
            if isOp(current, ".") || isOp(current, "[") {
                node = try parseSubscript(node)
            } else if isOp(current, "(") {
                let pos = position
                node = .call(node, try parseCallArguments(), pos)
            } else {
                return node
            }
        }
    }

    private mutating func parseFilterExpression(_ start: JinjaExpr) throws -> JinjaExpr {
        var node = start
        var links = 0
        defer { depth -= links }
        while true {
            try descend()
            links += 1
            if isOp(current, "|") {
                node = try parseFilter(node)!
            } else if isName(current, "is") {
                node = try parseTest(node)
            } else if isOp(current, "(") {
                let pos = position
                node = .call(node, try parseCallArguments(), pos)
            } else {
                return node
            }
        }
    }

    private mutating func parseSubscript(_ node: JinjaExpr) throws -> JinjaExpr {
        let token = advance()
        if token.text == "." {
            let attribute = advance()
            if attribute.kind == .name { return .getattr(node, attribute.text) }
            guard attribute.kind == .integer else { throw fail("expected name or number", at: attribute) }
            return .getitem(node, .literal(.int(attribute.integer)))
        }
        var items: [JinjaExpr] = []
        while !isOp(current, "]") {
            if !items.isEmpty { try expectOp(",") }
            items.append(try parseSubscribed())
        }
        try expectOp("]")
        return .getitem(node, items.count == 1 ? items[0] : .tuple(items))
    }

    private mutating func parseSubscribed() throws -> JinjaExpr {
        var start: JinjaExpr?
        if skipOp(":") {
            start = nil
        } else {
            let node = try parseExpression()
            guard skipOp(":") else { return node }
            start = node
        }
        var stop: JinjaExpr?
        var step: JinjaExpr?
        if !isOp(current, ":") && !isOp(current, "]") && !isOp(current, ",") { stop = try parseExpression() }
        if skipOp(":") {
            if !isOp(current, "]") && !isOp(current, ",") { step = try parseExpression() }
        }
        return .slice(start, stop, step)
    }

    private mutating func parseCallArguments() throws -> JinjaCallArguments {
        let open = current
        try expectOp("(")
        var arguments = JinjaCallArguments()
        var requireComma = false
        while !isOp(current, ")") {
            if requireComma {
                try expectOp(",")
                if isOp(current, ")") { break }
            }
            if isOp(current, "*") || isOp(current, "**") {
                throw JinjaFailure.unsupported("'*args' and '**kwargs' in calls").located((current.line, current.column))
            }
            if current.kind == .name && isOp(look, "=") {
                let key = advance().text
                advance()
                arguments.keywords.append((key, try parseExpression()))
            } else {
                guard arguments.keywords.isEmpty else { throw fail("invalid syntax for function call expression", at: open) }
                arguments.positional.append(try parseExpression())
            }
            requireComma = true
        }
        try expectOp(")")
        return arguments
    }

    private mutating func parseFilter(_ input: JinjaExpr?, startInline: Bool = false) throws -> JinjaExpr? {
        var node = input
        var inline = startInline
        var links = 0
        defer { depth -= links }
        while isOp(current, "|") || inline {
            try descend()
            links += 1
            if !inline { advance() }
            inline = false
            let token = try expectName()
            var name = token.text
            while skipOp(".") { name += "." + (try expectName().text) }
            try JinjaBuiltins.checkFilter(name, at: token)
            let arguments = isOp(current, "(") ? try parseCallArguments() : JinjaCallArguments()
            node = .filter(node, name, arguments, JinjaPosition(line: token.line, column: token.column))
        }
        return node
    }

    private mutating func parseTest(_ node: JinjaExpr) throws -> JinjaExpr {
        let isToken = advance()
        let negated = skipName("not")
        let nameToken = try expectName()
        var name = nameToken.text
        while skipOp(".") { name += "." + (try expectName().text) }
        try JinjaBuiltins.checkTest(name, at: nameToken)
        var arguments = JinjaCallArguments()
        if isOp(current, "(") {
            arguments = try parseCallArguments()
        } else if [.name, .string, .integer, .float].contains(current.kind) || isOp(current, "[") || isOp(current, "{"),
                  !(isName(current, "else") || isName(current, "or") || isName(current, "and")) {
            if isName(current, "is") { throw fail("You cannot chain multiple tests with is") }
            arguments.positional = [try parsePostfix(try parsePrimary())]
        }
        let test = JinjaExpr.test(node, name, arguments, JinjaPosition(line: isToken.line, column: isToken.column))
        return negated ? .not(test) : test
    }
}
