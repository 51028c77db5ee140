// Multi-turn chat on a session: the conversation is re-rendered with its template each turn and only the
// tokens the cache has not seen are prefilled (anchored on mlx-swift-lm's `ChatSession`).
import Foundation
import AdapterCore

/// A conversation with a model: keeps the messages, renders them with the chosen template, and reuses
/// the session's cache between turns.
public final class ChatSession: @unchecked Sendable {
    // @unchecked: `messages` is touched only while `lock` is held.

    /// The session the turns run on (its image and modes apply to every turn).
    public let session: Session
    /// The template the conversation is rendered with.
    public let template: PromptTemplate
    /// The system message, if any (chat template: its system turn; alpaca: replaces the header).
    public let system: String?
    private var history: [ChatMessage]
    private let lock = NSLock()

    /// A chat on `session`. `template` nil picks the container's default (alpaca with an adapter, else the
    /// model's chat template, else raw); `.chat` needs a model with a chat template.
    public init(session: Session, template: PromptTemplate? = nil, system: String? = nil) throws {
        let container = session.container
        let t = template ?? container.defaultConversationTemplate
        if t == .chat && container.chatTemplate == nil {
            throw AdapterError.unsupported("this model has no chat template; use --template alpaca or raw")
        }
        self.session = session
        self.template = t
        self.system = system
        history = ChatSession.initialMessages(system)
    }

    private static func initialMessages(_ system: String?) -> [ChatMessage] {
        system.map { [ChatMessage(role: "system", content: $0)] } ?? []
    }

    /// The conversation so far.
    public var messages: [ChatMessage] { lock.withLock { history } }

    /// Clears the conversation and the cache.
    public func reset() {
        lock.withLock { history = ChatSession.initialMessages(system) }
        session.reset()
    }

    /// Answers `message`. `onText` receives text as it becomes final; returning false stops the answer.
    /// When the conversation no longer fits the context, throws `GenerationError.contextFull` and leaves
    /// the conversation as it was.
    public func respond(to message: String, maxNewTokens: Int = 512, sampling: SamplingParameters? = nil,
                        onText: ((String) -> Bool)? = nil) throws -> GenerationResult {
        try lock.withLock {
            let container = session.container
            let turn = history + [ChatMessage(role: "user", content: message)]
            let text = try container.renderConversation(turn, template: template)
            let ids = container.tokenizer.encodePrompt(text)
            if ids.count >= session.capacity { throw GenerationError.contextFull(tokens: ids.count, capacity: session.capacity) }
            let result = try session.generate(prompt: ids, maxNewTokens: maxNewTokens, sampling: sampling,
                                              onToken: onText.map { f in { _, piece in piece.isEmpty || f(piece) } })
            history = turn + [ChatMessage(role: "assistant", content: result.text)]
            return result
        }
    }
}

extension ModelContainer {
    /// The prompt template a conversation uses when none is chosen: the model's chat template when it has one
    /// and no adapter is bound, else the multi-turn Alpaca format the adapters were trained on.
    public var defaultConversationTemplate: PromptTemplate {
        chatTemplate != nil && model.adapter == nil ? .chat : .alpaca
    }

    /// A conversation rendered for generation: the model's chat template (`.chat`), the built-in multi-turn
    /// Alpaca template (`.alpaca`), or the turns joined by newlines (`.raw`).
    public func renderConversation(_ messages: [ChatMessage], template: PromptTemplate) throws -> String {
        switch template {
        case .chat: return try renderChat(messages, addGenerationPrompt: true)
        case .alpaca: return try renderChat(messages, addGenerationPrompt: true, template: ModelContainer.alpacaChat)
        case .raw: return messages.map { $0.role == "assistant" ? $0.content + "\n\n" : $0.content + "\n" }.joined()
        }
    }

    /// The parsed built-in multi-turn Alpaca template.
    static let alpacaChat: ChatTemplate = try! ChatTemplate(source: ChatTemplate.alpaca)
}
