import Foundation

// Chat templates: the Jinja2 program a model ships (GGUF `tokenizer.chat_template`, or `chat_template`
// in a Hugging Face tokenizer_config.json) that turns a conversation into the prompt text it was trained on.
// The `chat` prompt template renders it exactly as transformers' `apply_chat_template` does: jinja2 with
// `trim_blocks` and `lstrip_blocks`, the variables `messages`, `add_generation_prompt`, `bos_token`,
// `eos_token`, `tools` and `documents` (both None), and transformers' `raise_exception`,
// `strftime_now` and `tojson`. The interpreter is in Jinja/: lexer, parser, interpreter, builtins.

/// One turn of a conversation, as a template sees it (`message['role']`, `message.content`).
public struct ChatMessage: Codable, Equatable, Sendable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// Why a chat template could not be parsed or rendered.
public struct ChatTemplateError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable {
        /// The source is not valid Jinja (jinja2 would refuse it too).
        case syntax
        /// The template called `raise_exception(message)`, e.g. on roles that do not alternate.
        case raised
        /// Valid Jinja that this interpreter does not implement; `message` names the feature.
        case unsupported
        /// A runtime error jinja2 would also raise: an undefined value used, a type error.
        case runtime
    }

    public let kind: Kind
    public let message: String
    public let line: Int?
    public let column: Int?

    public init(kind: Kind, message: String, line: Int? = nil, column: Int? = nil) {
        self.kind = kind
        self.message = message
        self.line = line
        self.column = column
    }

    /// One line, written to follow a "chat template: " prefix: "syntax error at line 3, column 10:
    /// unexpected '}'", "raise_exception: Conversation roles must alternate ...".
    public var description: String {
        let text = message.replacingOccurrences(of: "\r", with: "\\r").replacingOccurrences(of: "\n", with: "\\n")
        let place = line.map { l in column.map { "line \(l), column \($0)" } ?? "line \(l)" }
        switch kind {
        case .syntax:
            return "syntax error" + (place.map { " at \($0)" } ?? "") + ": " + text
        case .raised:
            return "raise_exception: " + text
        case .unsupported:
            return "unsupported Jinja feature: " + text + (place.map { " (\($0))" } ?? "")
        case .runtime:
            return "error" + (place.map { " at \($0)" } ?? "") + ": " + text
        }
    }

    init(_ failure: JinjaFailure) {
        let kind: Kind
        switch failure.kind {
        case .syntax: kind = .syntax
        case .raised: kind = .raised
        case .unsupported: kind = .unsupported
        case .runtime: kind = .runtime
        }
        self.init(kind: kind, message: failure.message, line: failure.line, column: failure.column)
    }
}

/// A parsed chat template.
public struct ChatTemplate: Sendable {
    public let source: String
    private let program: [JinjaStmt]

    /// Parses `source`; throws a `.syntax` or `.unsupported` error where jinja2 would fail to compile
    /// or a feature is missing here.
    public init(source: String) throws {
        self.source = source
        do {
            program = try JinjaParser.parse(source)
        } catch let failure as JinjaFailure {
            throw ChatTemplateError(failure)
        }
    }

    /// Renders the conversation. `extra` adds string variables (e.g. `date_string`), overriding the
    /// standard ones of the same name.
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String, eosToken: String,
                       extra: [String: String] = [:]) throws -> String {
        let globals = JinjaScope(parent: nil)
        JinjaBuiltins.globals(into: globals)
        let context = JinjaScope(parent: globals)
        context.variables = [
            "messages": .list(messages.map { .dict(JinjaDict([("role", .string($0.role)), ("content", .string($0.content))])) }),
            "add_generation_prompt": .bool(addGenerationPrompt),
            "bos_token": .string(bosToken),
            "eos_token": .string(eosToken),
            "tools": .none,
            "documents": .none,
        ]
        for (name, value) in extra { context.variables[name] = .string(value) }
        do {
            return try JinjaInterpreter().render(program, scope: context)
        } catch let failure as JinjaFailure {
            throw ChatTemplateError(failure)
        }
    }

    // MARK: - Built-in templates for models that carry none

    /// ChatML, as Qwen2 and SmolLM2 use it, without their default system turn.
    public static let chatML = #"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"#

    /// Llama-2-chat, as in Meta's Hugging Face tokenizer_config.json: `[INST]` turns with BOS, the
    /// system message in `<<SYS>>` inside the first user turn, content stripped.
    public static let llama2 = #"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"#

    /// Alpaca, as the official LLaMA-Adapter `format_prompt` writes it: one user message with a
    /// generation prompt renders exactly `PromptTemplate.alpaca(instruction)`. A system message
    /// replaces the header; an assistant turn follows "### Response:" directly and ends with EOS.
    public static let alpaca = #"""
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set header = messages[0]['content'] -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set header = 'Below is an instruction that describes a task. Write a response that appropriately completes the request.' -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{{- header + '\n\n' -}}
{%- for message in loop_messages -%}
    {%- if message['role'] == 'user' -%}
        {{- '### Instruction:\n' + message['content'] + '\n\n' -}}
    {%- elif message['role'] == 'assistant' -%}
        {{- '### Response:' + message['content'] + eos_token + '\n\n' -}}
    {%- else -%}
        {{- raise_exception('The alpaca template supports only system, user and assistant roles') -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '### Response:' -}}
{%- endif -%}

"""#
}
