import Foundation

// The jinja2 3.1 lexer (`jinja2/lexer.py`) with the settings transformers uses:
// `trim_blocks=True`, `lstrip_blocks=True`, `keep_trailing_newline=False`.
//
// - Newlines (`\r\n`, `\r`, `\n`) are normalised to `\n` before lexing, and one trailing newline of the
//   source is dropped.
// - `{%-`, `{{-`, `{#-` strip all whitespace before the tag; `-%}`, `-}}`, `-#}` strip all after it.
// - lstrip_blocks: spaces and tabs between the start of a line and a `{%` or `{#` tag are removed
//   (not for `{{`; `{%+` opts out).
// - trim_blocks: one newline right after `%}` or `#}` is removed (`+%}` opts out; `{% raw %}`'s own
//   end is never trimmed).
// - Inside a tag, `}}` or `%}` only ends it when brackets are balanced, so `{{ {'a': {'b': 1}} }}` works.

struct JinjaToken {
    enum Kind: Equatable {
        case data, variableBegin, variableEnd, blockBegin, blockEnd
        case name, string, integer, float, op
        case eof
    }

    var kind: Kind
    /// Template text for `data`, the identifier for `name`, the unescaped value for `string`, the
    /// operator for `op`.
    var text: String
    var integer: Int = 0
    var float: Double = 0
    var line: Int
    var column: Int

    /// How jinja2 names a token in "expected ..., got ..." messages.
    var description: String {
        switch kind {
        case .name, .op: return text
        case .string: return "string"
        case .integer: return "integer"
        case .float: return "float"
        case .data: return "template data / text"
        case .variableBegin: return "begin of print statement"
        case .variableEnd: return "end of print statement"
        case .blockBegin: return "begin of statement block"
        case .blockEnd: return "end of statement block"
        case .eof: return "end of template"
        }
    }
}

struct JinjaLexer {
    private let src: [Unicode.Scalar]
    private var lineStarts: [Int] = [0]
    private var tokens: [JinjaToken] = []
    private var pos = 0
    /// jinja2's `line_starting`: the previous match ended with a newline (or nothing was matched yet).
    private var lineStarting = true

    init(source: String) {
        // Normalise newlines and drop one trailing newline, as `tokeniter` does.
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(source.unicodeScalars.count)
        var it = source.unicodeScalars.makeIterator()
        var pending: Unicode.Scalar? = it.next()
        while let c = pending {
            pending = it.next()
            if c == "\r" {
                scalars.append("\n")
                if pending == "\n" { pending = it.next() }
            } else {
                scalars.append(c)
            }
        }
        if scalars.last == "\n" { scalars.removeLast() }
        src = scalars
        for (i, c) in src.enumerated() where c == "\n" { lineStarts.append(i + 1) }
    }

    static func tokenize(_ source: String) throws -> [JinjaToken] {
        var lexer = JinjaLexer(source: source)
        try lexer.run()
        return lexer.tokens
    }

    // MARK: Positions

    private func location(_ offset: Int) -> (line: Int, column: Int) {
        var lo = 0, hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        return (lo + 1, offset - lineStarts[lo] + 1)
    }

    private func fail(_ message: String, at offset: Int) -> JinjaFailure {
        let (line, column) = location(offset)
        return .syntax(message, line: line, column: column)
    }

    private mutating func emit(_ kind: JinjaToken.Kind, _ text: String, at offset: Int) {
        let (line, column) = location(offset)
        tokens.append(JinjaToken(kind: kind, text: text, line: line, column: column))
    }

    private func at(_ i: Int, _ literal: String) -> Bool {
        var j = i
        for c in literal.unicodeScalars {
            guard j < src.count, src[j] == c else { return false }
            j += 1
        }
        return true
    }

    private func skipSpace(from i: Int) -> Int {
        var j = i
        while j < src.count, JinjaPython.isSpace(src[j]) { j += 1 }
        return j
    }

    // MARK: Root state

    private enum TagKind { case comment, block, variable, raw }

    private mutating func run() throws {
        while pos < src.count {
            // The earliest `{{`, `{%` or `{#`.
            var i = pos
            var found: TagKind?
            while i + 1 < src.count {
                if src[i] == "{" {
                    switch src[i + 1] {
                    case "{": found = .variable
                    case "%": found = .block
                    case "#": found = .comment
                    default: break
                    }
                    if found != nil { break }
                }
                i += 1
            }
            guard var kind = found else {
                emit(.data, JinjaPython.string(src[pos...]), at: pos)
                pos = src.count
                break
            }
            var sign: Unicode.Scalar?
            var afterStart = i + 2
            if afterStart < src.count, src[afterStart] == "-" || src[afterStart] == "+" {
                sign = src[afterStart]
                afterStart += 1
            }
            var rawEnd = 0
            if kind == .block, let end = matchRawBegin(afterStart) {
                kind = .raw
                rawEnd = end
            }
            emitData(from: pos, to: i, sign: sign, lstrip: kind != .variable)
            switch kind {
            case .comment:
                try lexComment(from: afterStart, tagStart: i)
            case .raw:
                pos = rawEnd
                lineStarting = src[rawEnd - 1] == "\n"
                try lexRaw(tagStart: i)
            case .block, .variable:
                emit(kind == .block ? .blockBegin : .variableBegin, "", at: i)
                pos = afterStart
                lineStarting = false
                try lexTag(block: kind == .block)
            }
        }
        emit(.eof, "", at: src.count)
    }

    /// Template data before a tag, with `-` stripping or lstrip_blocks applied.
    private mutating func emitData(from start: Int, to end: Int, sign: Unicode.Scalar?, lstrip: Bool) {
        var stop = end
        if sign == "-" {
            while stop > start, JinjaPython.isSpace(src[stop - 1]) { stop -= 1 }
        } else if sign != "+" && lstrip {
            var lineStart = end
            while lineStart > start, src[lineStart - 1] != "\n" { lineStart -= 1 }
            if (lineStart > start || lineStarting) && lineStart < end
                && src[lineStart..<end].allSatisfy(JinjaPython.isSpace) {
                stop = lineStart
            }
        }
        if stop > start { emit(.data, JinjaPython.string(src[start..<stop]), at: start) }
    }

    /// `{%[-+]?\s*raw\s*(-%}\s*|%})` after the `{%` and sign: returns the end offset.
    private func matchRawBegin(_ i: Int) -> Int? {
        var j = skipSpace(from: i)
        guard at(j, "raw") else { return nil }
        j = skipSpace(from: j + 3)
        if at(j, "-%}") { return skipSpace(from: j + 3) }
        if at(j, "%}") { return j + 2 }
        return nil
    }

    private mutating func lexComment(from start: Int, tagStart: Int) throws {
        // jinja2 only reports a missing end when some text follows the opening.
        if start >= src.count { pos = src.count; return }
        var j = start
        while j < src.count {
            if at(j, "+#}") { pos = j + 3; lineStarting = false; return }
            if at(j, "-#}") {
                pos = skipSpace(from: j + 3)
                lineStarting = src[pos - 1] == "\n"
                return
            }
            if at(j, "#}") {
                pos = j + 2
                if pos < src.count, src[pos] == "\n" { pos += 1 }
                lineStarting = src[pos - 1] == "\n"
                return
            }
            j += 1
        }
        throw fail("Missing end of comment tag", at: tagStart)
    }

    private mutating func lexRaw(tagStart: Int) throws {
        if pos >= src.count { return }
        var j = pos
        while j < src.count {
            if src[j] == "{", at(j, "{%") {
                var k = j + 2
                var sign: Unicode.Scalar?
                if k < src.count, src[k] == "-" || src[k] == "+" { sign = src[k]; k += 1 }
                k = skipSpace(from: k)
                if at(k, "endraw") {
                    k = skipSpace(from: k + 6)
                    var end: Int?
                    if at(k, "+%}") { end = k + 3 }
                    else if at(k, "-%}") { end = skipSpace(from: k + 3) }
                    else if at(k, "%}") { end = k + 2 + ((k + 2 < src.count && src[k + 2] == "\n") ? 1 : 0) }
                    if let end {
                        emitData(from: pos, to: j, sign: sign, lstrip: true)
                        pos = end
                        lineStarting = src[end - 1] == "\n"
                        return
                    }
                }
            }
            j += 1
        }
        throw fail("Missing end of raw directive", at: tagStart)
    }

    // MARK: Inside `{{ }}` and `{% %}`

    private static let operators: [String] = [
        "//", "**", "==", "!=", ">=", "<=",
        "+", "-", "/", "*", "%", "~", "[", "]", "(", ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";",
    ]

    private mutating func lexTag(block: Bool) throws {
        var balancing: [Unicode.Scalar] = []
        while true {
            if balancing.isEmpty {
                if block {
                    if at(pos, "+%}") { emit(.blockEnd, "", at: pos); pos += 3; lineStarting = false; return }
                    if at(pos, "-%}") {
                        emit(.blockEnd, "", at: pos)
                        pos = skipSpace(from: pos + 3)
                        lineStarting = src[pos - 1] == "\n"
                        return
                    }
                    if at(pos, "%}") {
                        emit(.blockEnd, "", at: pos)
                        pos += 2
                        if pos < src.count, src[pos] == "\n" { pos += 1 }
                        lineStarting = src[pos - 1] == "\n"
                        return
                    }
                } else {
                    if at(pos, "-}}") {
                        emit(.variableEnd, "", at: pos)
                        pos = skipSpace(from: pos + 3)
                        lineStarting = src[pos - 1] == "\n"
                        return
                    }
                    if at(pos, "}}") { emit(.variableEnd, "", at: pos); pos += 2; lineStarting = false; return }
                }
            }
            // jinja2 stops silently at the end of the source; the parser reports the missing end.
            guard pos < src.count else { return }
            let c = src[pos]
            if JinjaPython.isSpace(c) {
                pos = skipSpace(from: pos)
                continue
            }
            if let end = matchFloat(pos) {
                let text = JinjaPython.string(src[pos..<end]).replacingOccurrences(of: "_", with: "")
                emit(.float, text, at: pos)
                tokens[tokens.count - 1].float = Double(text) ?? .infinity
                pos = end
                continue
            }
            if let (end, value) = try matchInteger(pos) {
                emit(.integer, JinjaPython.string(src[pos..<end]), at: pos)
                tokens[tokens.count - 1].integer = value
                pos = end
                continue
            }
            if Self.isNameStart(c) {
                var end = pos + 1
                while end < src.count, Self.isNameContinue(src[end]) { end += 1 }
                emit(.name, JinjaPython.string(src[pos..<end]), at: pos)
                pos = end
                continue
            }
            if c == "'" || c == "\"" {
                var j = pos + 1
                var closed = false
                while j < src.count {
                    if src[j] == "\\" { j += 2; continue }
                    if src[j] == c { closed = true; break }
                    j += 1
                }
                if closed {
                    let value = try unescape(Array(src[(pos + 1)..<j]), at: pos)
                    emit(.string, value, at: pos)
                    pos = j + 1
                    continue
                }
            }
            guard let op = Self.operators.first(where: { at(pos, $0) }) else {
                throw fail("unexpected char \(JinjaPython.reprString(String(c))) at \(pos)", at: pos)
            }
            switch op {
            case "{": balancing.append("}")
            case "(": balancing.append(")")
            case "[": balancing.append("]")
            case "}", ")", "]":
                guard let expected = balancing.popLast() else { throw fail("unexpected '\(op)'", at: pos) }
                if String(expected) != op { throw fail("unexpected '\(op)', expected '\(expected)'", at: pos) }
            default: break
            }
            emit(.op, op, at: pos)
            pos += op.unicodeScalars.count
        }
    }

    static func isNameStart(_ c: Unicode.Scalar) -> Bool { c == "_" || c.properties.isXIDStart }
    static func isNameContinue(_ c: Unicode.Scalar) -> Bool { c.properties.isXIDContinue }

    private func isDigit(_ i: Int) -> Bool { i < src.count && src[i].value >= 48 && src[i].value <= 57 }

    /// `(\d+_)*\d+` from `i`: the end offset.
    private func digitRun(_ i: Int) -> Int? {
        guard isDigit(i) else { return nil }
        var j = i
        while isDigit(j) { j += 1 }
        while j < src.count, src[j] == "_", isDigit(j + 1) {
            j += 1
            while isDigit(j) { j += 1 }
        }
        return j
    }

    /// jinja2's `float_re`: digits with a fraction, an exponent, or both; not right after a dot.
    private func matchFloat(_ i: Int) -> Int? {
        if i > 0, src[i - 1] == "." { return nil }
        guard let intEnd = digitRun(i) else { return nil }
        var j = intEnd
        var hasFraction = false
        if j < src.count, src[j] == ".", let f = digitRun(j + 1) { j = f; hasFraction = true }
        if j < src.count, src[j] == "e" || src[j] == "E" {
            var k = j + 1
            if k < src.count, src[k] == "+" || src[k] == "-" { k += 1 }
            if let e = digitRun(k) { return e }
        }
        return hasFraction ? j : nil
    }

    /// jinja2's `integer_re`: 0b/0o/0x with `_` separators, decimal without leading zeros, or zeros.
    private func matchInteger(_ i: Int) throws -> (Int, Int)? {
        guard isDigit(i) else { return nil }
        func run(_ from: Int, _ isValid: (Unicode.Scalar) -> Bool) -> Int? {
            var j = from
            var any = false
            while j < src.count {
                if isValid(src[j]) { j += 1; any = true; continue }
                if src[j] == "_", j + 1 < src.count, isValid(src[j + 1]) { j += 2; any = true; continue }
                break
            }
            return any ? j : nil
        }
        if src[i] == "0", i + 1 < src.count {
            let prefixes: [(Unicode.Scalar, Int, (Unicode.Scalar) -> Bool)] = [
                ("b", 2, { $0 == "0" || $0 == "1" }),
                ("o", 8, { $0.value >= 48 && $0.value <= 55 }),
                ("x", 16, { $0.properties.isASCIIHexDigit }),
            ]
            for (letter, radix, isValid) in prefixes where src[i + 1] == letter || src[i + 1] == Unicode.Scalar(letter.value - 32)! {
                if let end = run(i + 2, isValid) {
                    let digits = JinjaPython.string(src[(i + 2)..<end]).replacingOccurrences(of: "_", with: "")
                    guard let value = Int(digits, radix: radix) else {
                        throw JinjaFailure.unsupported("integer literal beyond 64 bits").located(location(i))
                    }
                    return (end, value)
                }
            }
        }
        if src[i] == "0" {
            // `0(_?0)*`
            var j = i + 1
            while j < src.count {
                if src[j] == "0" { j += 1 } else if src[j] == "_", j + 1 < src.count, src[j + 1] == "0" { j += 2 } else { break }
            }
            return (j, 0)
        }
        guard let end = run(i, { $0.value >= 48 && $0.value <= 57 }) else { return nil }
        let digits = JinjaPython.string(src[i..<end]).replacingOccurrences(of: "_", with: "")
        guard let value = Int(digits) else {
            throw JinjaFailure.unsupported("integer literal beyond 64 bits").located(location(i))
        }
        return (end, value)
    }

    /// Python's `unicode-escape` decoding, which jinja2 applies to string literals.
    private func unescape(_ body: [Unicode.Scalar], at offset: Int) throws -> String {
        var out = String.UnicodeScalarView()
        var i = 0
        func hex(_ count: Int, _ name: String) throws -> UInt32 {
            guard i + count <= body.count else { throw fail("truncated \(name) escape", at: offset) }
            var v: UInt32 = 0
            for k in 0..<count {
                guard body[i + k].properties.isASCIIHexDigit, let d = UInt32(String(body[i + k]), radix: 16) else {
                    throw fail("truncated \(name) escape", at: offset)
                }
                v = v * 16 + d
            }
            i += count
            return v
        }
        func append(_ value: UInt32) throws {
            guard let s = Unicode.Scalar(value) else {
                throw JinjaFailure.unsupported("string literal with a lone surrogate or illegal code point").located(location(offset))
            }
            out.append(s)
        }
        while i < body.count {
            let c = body[i]
            i += 1
            guard c == "\\", i < body.count else { out.append(c); continue }
            let e = body[i]
            i += 1
            switch e {
            case "\n": break
            case "\\": out.append("\\")
            case "'": out.append("'")
            case "\"": out.append("\"")
            case "a": out.append("\u{07}")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "t": out.append("\t")
            case "v": out.append("\u{0B}")
            case "0"..."7":
                var v = e.value - 48
                var n = 1
                while n < 3, i < body.count, body[i].value >= 48, body[i].value <= 55 {
                    v = v * 8 + body[i].value - 48
                    i += 1
                    n += 1
                }
                try append(v)
            case "x": try append(try hex(2, "\\xXX"))
            case "u": try append(try hex(4, "\\uXXXX"))
            case "U":
                let v = try hex(8, "\\UXXXXXXXX")
                guard v <= 0x10FFFF else { throw fail("illegal Unicode character", at: offset) }
                try append(v)
            case "N": throw JinjaFailure.unsupported("\\N{...} escapes in string literals").located(location(offset))
            default:
                out.append("\\")
                out.append(e)
            }
        }
        return String(out)
    }
}
