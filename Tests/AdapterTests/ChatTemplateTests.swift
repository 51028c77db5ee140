import LlamaAdapter
import Foundation
import XCTest

/// The Jinja chat-template interpreter against jinja2 rendering the same templates the way transformers
/// does (Tests/Fixtures/chat_templates/cases.json, made by tools/reference/make_chat_template_cases.py).
final class ChatTemplateTests: XCTestCase {
    // MARK: - Fixture

    struct Fixture: Decodable {
        struct Template: Decodable {
            let source: String
            let bos_token: String
            let eos_token: String
            let origin: String
        }

        struct Failure: Decodable {
            let type: String
            let message: String?
            let raised: Bool
        }

        struct Case: Decodable {
            let template: String
            let conversation: String
            let add_generation_prompt: Bool
            let extra: [String: String]
            let output: String?
            let error: Failure?
        }

        struct Truncation: Decodable {
            let template: String
            let length: Int
            let conversation: String
            let add_generation_prompt: Bool
            let output: String?
            let error: Failure?
        }

        let templates: [String: Template]
        let conversations: [String: [ChatMessage]]
        let builtins: [String: String]
        let cases: [Case]
        let truncations: [Truncation]
    }

    static let fixtureURL = Fixtures.root.appendingPathComponent("chat_templates/cases.json")

    static let fixture: Fixture = {
        let data = try! Data(contentsOf: fixtureURL)
        return try! JSONDecoder().decode(Fixture.self, from: data)
    }()

    /// The error kind that corresponds to a jinja2 exception.
    private func expectedKind(_ failure: Fixture.Failure) -> ChatTemplateError.Kind {
        if failure.raised { return .raised }
        switch failure.type {
        case "TemplateSyntaxError", "TemplateAssertionError", "SyntaxError": return .syntax
        default: return .runtime
        }
    }

    /// Renders and compares with jinja2's outcome; returns a description of the mismatch, or nil.
    private func check(source: String, template: Fixture.Template, conversation: String, addGenerationPrompt: Bool,
                       extra: [String: String], output: String?, error: Fixture.Failure?) -> String? {
        let messages = Self.fixture.conversations[conversation]!
        let result = Result {
            try ChatTemplate(source: source).render(messages: messages, addGenerationPrompt: addGenerationPrompt,
                                                    bosToken: template.bos_token, eosToken: template.eos_token,
                                                    extra: extra)
        }
        switch (result, output, error) {
        case (.success(let got), let want?, _):
            if Array(got.utf8) == Array(want.utf8) { return nil }
            let g = Array(got.unicodeScalars), w = Array(want.unicodeScalars)
            let at = (0..<min(g.count, w.count)).first { g[$0] != w[$0] } ?? min(g.count, w.count)
            func around(_ s: [Unicode.Scalar]) -> String {
                String(String.UnicodeScalarView(s[max(0, at - 20)..<min(s.count, at + 40)])).debugDescription
            }
            return "output differs at scalar \(at): got \(around(g)), want \(around(w))"
        case (.success(let got), nil, let want?):
            return "rendered \(got.debugDescription.prefix(120)) but jinja2 raised \(want.type): \(want.message ?? "")"
        case (.failure(let e), _, let want?):
            guard let e = e as? ChatTemplateError else { return "threw a non-ChatTemplateError: \(e)" }
            if e.kind != expectedKind(want) {
                return "threw \(e.kind) (\(e)) but jinja2 raised \(want.type): \(want.message ?? "")"
            }
            if want.raised && e.message != want.message {
                return "raised \(e.message.debugDescription), want \(want.message.debugDescription)"
            }
            return nil
        case (.failure(let e), _, nil):
            return "threw \(e) but jinja2 rendered \(output?.debugDescription.prefix(120) ?? "")"
        default:
            return "fixture case has neither output nor error"
        }
    }

    // MARK: - Against jinja2

    func testEveryCaseRendersByteIdenticallyToJinja2() {
        let fixture = Self.fixture
        XCTAssertGreaterThan(fixture.cases.count, 250)
        var failures = 0
        for c in fixture.cases {
            let template = fixture.templates[c.template]!
            if let problem = check(source: template.source, template: template, conversation: c.conversation,
                                   addGenerationPrompt: c.add_generation_prompt, extra: c.extra,
                                   output: c.output, error: c.error) {
                failures += 1
                XCTFail("\(c.template) / \(c.conversation) / agp=\(c.add_generation_prompt) \(c.extra): \(problem)")
            }
        }
        XCTAssertEqual(failures, 0)
    }

    func testTruncatedTemplatesFailOrRenderAsJinja2Does() {
        let fixture = Self.fixture
        XCTAssertEqual(fixture.truncations.count, 300)
        for t in fixture.truncations {
            let template = fixture.templates[t.template]!
            let prefix = String(String.UnicodeScalarView(template.source.unicodeScalars.prefix(t.length)))
            if let problem = check(source: prefix, template: template, conversation: t.conversation,
                                   addGenerationPrompt: t.add_generation_prompt, extra: [:],
                                   output: t.output, error: t.error) {
                XCTFail("\(t.template)[..<\(t.length)]: \(problem)")
            }
        }
    }

    func testBuiltinTemplatesAreTheOnesCheckedAgainstJinja2() {
        let builtins = Self.fixture.builtins
        XCTAssertEqual(ChatTemplate.chatML, builtins["chatML"])
        XCTAssertEqual(ChatTemplate.llama2, builtins["llama2"])
        XCTAssertEqual(ChatTemplate.alpaca, builtins["alpaca"])
        XCTAssertEqual(Self.fixture.templates["llama2_chat"]?.source, ChatTemplate.llama2)
        XCTAssertEqual(Self.fixture.templates["builtin_chatML"]?.source, ChatTemplate.chatML)
        XCTAssertEqual(Self.fixture.templates["builtin_alpaca"]?.source, ChatTemplate.alpaca)
    }

    // MARK: - Fuzzing

    /// SplitMix64: a fixed sequence on every platform.
    private struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    func testRandomTruncationsAndMutationsThrowReadableErrorsInsteadOfTrapping() {
        var rng = Generator(state: 0x5EED)
        let templates = Self.fixture.templates.sorted { $0.key < $1.key }.map(\.value)
        let messages = Self.fixture.conversations["tricky"]!
        let pieces = ["{{", "}}", "{%", "%}", "{#", "#}", "-", "+", "(", ")", "[", "]", "{", "}", "'", "\"", "|",
                      ".", ",", ":", "\n", " ", "if", "for", "endfor", "endif", "else", "in", "not", "is", "set",
                      "loop", "~", "*", "**", "/", "//", "%", "0", "9", "\\", "é", "macro", "raw", "endraw"]
        var rendered = 0, failed = 0
        for i in 0..<300 {
            let template = templates[Int.random(in: 0..<templates.count, using: &rng)]
            var scalars = Array(template.source.unicodeScalars)
            scalars = Array(scalars.prefix(Int.random(in: 0...scalars.count, using: &rng)))
            if i % 2 == 1 {
                // Also splice in a few Jinja-significant pieces.
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    let at = Int.random(in: 0...scalars.count, using: &rng)
                    scalars.insert(contentsOf: pieces.randomElement(using: &rng)!.unicodeScalars, at: at)
                }
            }
            let source = String(String.UnicodeScalarView(scalars))
            do {
                _ = try ChatTemplate(source: source).render(messages: messages, addGenerationPrompt: i % 3 == 0,
                                                            bosToken: template.bos_token, eosToken: template.eos_token)
                rendered += 1
            } catch let error as ChatTemplateError {
                failed += 1
                XCTAssertFalse(error.description.isEmpty)
                XCTAssertFalse(error.description.contains("\n"), "not one line: \(error.description)")
            } catch {
                XCTFail("unexpected error type \(error)")
            }
        }
        XCTAssertEqual(rendered + failed, 300)
        XCTAssertGreaterThan(rendered, 0)
        XCTAssertGreaterThan(failed, 0)
    }

    // MARK: - Behaviour

    private func render(_ source: String, _ messages: [ChatMessage] = [], addGenerationPrompt: Bool = true,
                        extra: [String: String] = [:]) throws -> String {
        try ChatTemplate(source: source).render(messages: messages, addGenerationPrompt: addGenerationPrompt,
                                                bosToken: "<s>", eosToken: "</s>", extra: extra)
    }

    private func error(_ source: String, _ messages: [ChatMessage] = []) -> ChatTemplateError? {
        do {
            _ = try render(source, messages)
            return nil
        } catch {
            return error as? ChatTemplateError
        }
    }

    func testSmolLM2TemplateAddsADefaultSystemTurn() throws {
        let smol = Self.fixture.templates["smollm2"]!
        let out = try ChatTemplate(source: smol.source).render(
            messages: [ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true,
            bosToken: smol.bos_token, eosToken: smol.eos_token)
        XCTAssertEqual(out, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        let withSystem = try ChatTemplate(source: smol.source).render(
            messages: [ChatMessage(role: "system", content: "S"), ChatMessage(role: "user", content: "Hi")],
            addGenerationPrompt: false, bosToken: smol.bos_token, eosToken: smol.eos_token)
        XCTAssertEqual(withSystem, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
    }

    func testAlpacaBuiltinReproducesTheOfficialFormatPrompt() throws {
        let out = try ChatTemplate(source: ChatTemplate.alpaca).render(
            messages: [ChatMessage(role: "user", content: "Name three colours.")], addGenerationPrompt: true,
            bosToken: "<s>", eosToken: "</s>")
        XCTAssertEqual(out, "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
            + "### Instruction:\nName three colours.\n\n### Response:")
    }

    func testLlama2BuiltinPutsTheSystemMessageInTheFirstInstruction() throws {
        let out = try ChatTemplate(source: ChatTemplate.llama2).render(
            messages: [ChatMessage(role: "system", content: "Be kind."), ChatMessage(role: "user", content: " Hi "),
                       ChatMessage(role: "assistant", content: "Hello"), ChatMessage(role: "user", content: "Bye")],
            addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
        // strip() applies to the whole first instruction, so the user text keeps its leading space.
        XCTAssertEqual(out, "<s>[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\n Hi [/INST] Hello </s><s>[INST] Bye [/INST]")
    }

    func testSetInsideAForLoopDoesNotLeakButNamespaceAttributesDo() throws {
        XCTAssertEqual(try render("{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + 10 %}{{ x }},{% endfor %}{{ x }}"), "11,11,1")
        XCTAssertEqual(try render("{% set ns = namespace(x=1) %}{% for i in [1, 2] %}{% set ns.x = ns.x + 10 %}{% endfor %}{{ ns.x }}"), "21")
        XCTAssertEqual(try render("{% if true %}{% set y = 2 %}{% endif %}{{ y }}"), "2")
    }

    func testTrimAndLstripBlocksAreOnAsInTransformers() throws {
        XCTAssertEqual(try render("a\n    {% if true %}\n    b\n    {% endif %}\nc"), "a\n    b\nc")
        // `{{ }}` is neither trimmed nor lstripped.
        XCTAssertEqual(try render("  {{ 'x' }}\ny"), "  x\ny")
        // A single trailing newline of the source is dropped, as jinja2 does by default.
        XCTAssertEqual(try render("x\n"), "x")
    }

    func testUndefinedRendersEmptyButFailsWhenUsed() throws {
        XCTAssertEqual(try render("[{{ nothing }}][{{ nothing is defined }}]"), "[][False]")
        let e = try XCTUnwrap(error("{{ nothing.attribute }}"))
        XCTAssertEqual(e.kind, .runtime)
        XCTAssertEqual(e.message, "'nothing' is undefined")
    }

    func testRaiseExceptionBecomesARaisedErrorWithItsMessage() throws {
        let e = try XCTUnwrap(error("{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('Roles must alternate\\n!') }}{% endif %}",
                                    [ChatMessage(role: "assistant", content: "x")]))
        XCTAssertEqual(e.kind, .raised)
        XCTAssertEqual(e.message, "Roles must alternate\n!")
        XCTAssertEqual(e.description, "raise_exception: Roles must alternate\\n!")
    }

    func testSyntaxErrorsNameTheirLineAndColumn() throws {
        let e = try XCTUnwrap(error("first line\n{% if true %}\n  {{ 1 + }}\n{% endif %}"))
        XCTAssertEqual(e.kind, .syntax)
        XCTAssertEqual(e.line, 3)
        XCTAssertEqual(e.column, 10)
        XCTAssertEqual(e.description, "syntax error at line 3, column 10: unexpected 'end of print statement'")
        let unclosed = try XCTUnwrap(error("{% for m in messages %}{{ m }}"))
        XCTAssertEqual(unclosed.kind, .syntax)
        XCTAssertTrue(unclosed.message.hasPrefix("Unexpected end of template."), unclosed.message)
    }

    func testUnsupportedFeaturesAreNamed() throws {
        let filter = try XCTUnwrap(error("{{ 'x' | wordwrap }}"))
        XCTAssertEqual(filter.kind, .unsupported)
        XCTAssertTrue(filter.description.contains("'wordwrap' filter"), filter.description)
        let include = try XCTUnwrap(error("{% include 'other.jinja' %}"))
        XCTAssertEqual(include.kind, .unsupported)
        XCTAssertTrue(include.description.contains("'include' tag"), include.description)
    }

    func testExtraVariablesReachTheTemplate() throws {
        XCTAssertEqual(try render("{{ date_string }}|{{ bos_token }}", extra: ["date_string": "26 Jul 2024", "bos_token": "B"]),
                       "26 Jul 2024|B")
    }

    func testStrftimeNowFormatsTheCurrentDate() throws {
        let year = Calendar(identifier: .gregorian).component(.year, from: Date())
        XCTAssertEqual(try render("{{ strftime_now('%Y') }}"), String(year))
    }

    func testATemplateWithMacrosRendersRepeatedly() throws {
        let template = try ChatTemplate(source: "{% macro m(x) %}<{{ x }}>{% endmacro %}{% for m2 in messages %}{{ m(m2.content) }}{% endfor %}")
        for _ in 0..<3 {
            XCTAssertEqual(try template.render(messages: [ChatMessage(role: "user", content: "a")], addGenerationPrompt: false,
                                               bosToken: "", eosToken: ""), "<a>")
        }
    }

    func testRunawayMacroRecursionIsAnErrorNotACrash() throws {
        XCTAssertEqual(error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")?.kind, .runtime)
        // Recursion through a deep body is bounded by the total depth, not only the call count.
        let deepBody = "{% macro f(n) %}" + String(repeating: "{% if true %}", count: 40) + "{{ f(n - 1) if n > 0 else 1 + 1 }}"
            + String(repeating: "{% endif %}", count: 40) + "{% endmacro %}{{ f(60) }}"
        XCTAssertEqual(error(deepBody)?.kind, .runtime)
        XCTAssertEqual(try render("{% macro f(n) %}{{ n }}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(5) }}"), "543210")
    }

    func testPathologicalNestingIsRefusedInsteadOfOverflowingTheStack() throws {
        let deep = [
            "{{ " + String(repeating: "(", count: 5_000) + "1" + String(repeating: ")", count: 5_000) + " }}",
            "{{ " + Array(repeating: "1", count: 5_000).joined(separator: " + ") + " }}",
            "{{ " + String(repeating: "not ", count: 5_000) + "1 }}",
            "{{ 'x'" + String(repeating: " | trim", count: 5_000) + " }}",
            String(repeating: "{% if true %}", count: 5_000) + String(repeating: "{% endif %}", count: 5_000),
        ]
        for source in deep {
            XCTAssertEqual(error(source)?.kind, .unsupported)
        }
        // Depths that real templates reach are fine.
        XCTAssertEqual(try render("{{ " + Array(repeating: "1", count: 40).joined(separator: " + ") + " }}"), "40")
        XCTAssertEqual(try render(String(repeating: "{% for i in [1] %}", count: 30) + "{{ i }}" + String(repeating: "{% endfor %}", count: 30)), "1")
    }

    func testChatMessageIsCodable() throws {
        let message = ChatMessage(role: "user", content: "hé {{ x }}")
        let data = try JSONEncoder().encode(message)
        XCTAssertEqual(try JSONDecoder().decode(ChatMessage.self, from: data), message)
    }
}
