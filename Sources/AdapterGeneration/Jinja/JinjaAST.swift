// The syntax tree the parser builds and the interpreter walks; node names follow `jinja2/nodes.py`.

enum JinjaLiteral: Sendable {
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
}

struct JinjaPosition: Sendable {
    var line: Int
    var column: Int
}

struct JinjaCallArguments: Sendable {
    var positional: [JinjaExpr] = []
    var keywords: [(String, JinjaExpr)] = []
}

enum JinjaBinaryOperator: String, Sendable {
    case add = "+", sub = "-", mul = "*", div = "/", floorDiv = "//", mod = "%", pow = "**"
}

enum JinjaCompareOperator: String, Sendable {
    case eq = "==", ne = "!=", lt = "<", le = "<=", gt = ">", ge = ">=", `in` = "in", notIn = "not in"
}

indirect enum JinjaExpr: Sendable {
    case literal(JinjaLiteral)
    case name(String)
    case list([JinjaExpr])
    case tuple([JinjaExpr])
    case dict([(JinjaExpr, JinjaExpr)])
    /// `a.b`
    case getattr(JinjaExpr, String)
    /// `a[b]`, and `a.0`
    case getitem(JinjaExpr, JinjaExpr)
    /// `start:stop:step` inside `[...]`
    case slice(JinjaExpr?, JinjaExpr?, JinjaExpr?)
    case call(JinjaExpr, JinjaCallArguments, JinjaPosition)
    /// `input | name(args)`; the input is nil for `{% filter %}` and `{% set x | f %}` bodies.
    case filter(JinjaExpr?, String, JinjaCallArguments, JinjaPosition)
    /// `input is name(args)`
    case test(JinjaExpr, String, JinjaCallArguments, JinjaPosition)
    case not(JinjaExpr)
    case negative(JinjaExpr)
    case positive(JinjaExpr)
    case binary(JinjaBinaryOperator, JinjaExpr, JinjaExpr)
    /// `a ~ b ~ c`
    case concat([JinjaExpr])
    /// `a < b <= c`: Python's chained comparison.
    case compare(JinjaExpr, [(JinjaCompareOperator, JinjaExpr)])
    case and(JinjaExpr, JinjaExpr)
    case or(JinjaExpr, JinjaExpr)
    /// `then if test else otherwise`; without `else` the value is Undefined when the test fails.
    case conditional(test: JinjaExpr, then: JinjaExpr, otherwise: JinjaExpr?)
}

/// The left side of `set`, `for` and `with`.
indirect enum JinjaTarget: Sendable {
    case name(String)
    case tuple([JinjaTarget])
    /// `ns.attr`, only in `set`.
    case namespaceAttribute(String, String)
}

struct JinjaForLoop: Sendable {
    var target: JinjaTarget
    var iterable: JinjaExpr
    var filter: JinjaExpr?
    var body: [JinjaStmt]
    var otherwise: [JinjaStmt]
    var position: JinjaPosition
}

struct JinjaMacroDefinition: Sendable {
    var name: String
    var parameters: [(String, JinjaExpr?)]
    var body: [JinjaStmt]
    var position: JinjaPosition
}

indirect enum JinjaStmt: Sendable {
    /// Template text between tags.
    case text(String)
    /// `{{ expr }}`
    case output(JinjaExpr, JinjaPosition)
    /// `if`, then each `elif`, with their bodies; then the `else` body.
    case conditional([(JinjaExpr, [JinjaStmt])], [JinjaStmt], JinjaPosition)
    case forLoop(JinjaForLoop)
    case assign(JinjaTarget, JinjaExpr, JinjaPosition)
    /// `{% set x %}...{% endset %}`, with an optional filter chain applied to the captured text.
    case assignBlock(JinjaTarget, JinjaExpr?, [JinjaStmt], JinjaPosition)
    case macro(JinjaMacroDefinition)
    case breakLoop
    case continueLoop
    case with([(JinjaTarget, JinjaExpr)], [JinjaStmt], JinjaPosition)
    /// `{% filter f %}...{% endfilter %}`: the filter chain has a nil input.
    case filterBlock(JinjaExpr, [JinjaStmt], JinjaPosition)
    /// A body run in its own scope: transformers' `{% generation %}` tag, which only marks text.
    case scope([JinjaStmt])
}
