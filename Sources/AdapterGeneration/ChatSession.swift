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
        let t = template ?? (container.chatTemplate != nil && container.model.adapter == nil ? .chat : .alpaca)
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
            let text: String
            switch template {
            case .chat: text = try container.renderChat(turn, addGenerationPrompt: true)
            case .alpaca: text = try container.renderChat(turn, addGenerationPrompt: true, template: ChatSession.alpaca)
            case .raw: text = turn.map { $0.role == "assistant" ? $0.content + "\n\n" : $0.content + "\n" }.joined()
            }
            let ids = container.tokenizer.encodePrompt(text)
            if ids.count >= session.capacity { throw GenerationError.contextFull(tokens: ids.count, capacity: session.capacity) }
            let result = try session.generate(prompt: ids, maxNewTokens: maxNewTokens, sampling: sampling,
                                              onToken: onText.map { f in { _, piece in piece.isEmpty || f(piece) } })
            history = turn + [ChatMessage(role: "assistant", content: result.text)]
            return result
        }
    }

    /// The parsed built-in multi-turn Alpaca template.
    static let alpaca: ChatTemplate = try! ChatTemplate(source: ChatTemplate.alpaca)
}
