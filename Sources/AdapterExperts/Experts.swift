import Foundation
import AdapterCore
import AdapterVision
import AdapterModel
import AdapterGeneration

/// Runs the requested experts on one image and composes their text (paper section 4.4).
public final class ExpertPanel: @unchecked Sendable {
    /// The experts, in the order their text is composed.
    public let kinds: [ExpertKind]
    private let ocr: OCRExpert?

    /// Prepares `kinds` (duplicates are dropped); starts Tesseract when OCR is among them.
    public init(_ kinds: [ExpertKind]) throws {
        var seen = Set<ExpertKind>()
        self.kinds = kinds.filter { seen.insert($0).inserted }
        ocr = kinds.contains(.ocr) ? try OCRExpert() : nil
    }

    /// The experts' text for the image at `path`. The caption expert asks `container`'s own visual adapter the
    /// official caption instruction ("Generate caption of this image", greedy, at most `captionTokens` tokens).
    public func context(imagePath path: String, container: ModelContainer, channels: ChannelOrder? = nil,
                        captionTokens: Int = 64) throws -> String {
        try context(image: try ImageDecoder.decode(path: path), container: container, channels: channels, captionTokens: captionTokens)
    }

    /// The experts' text for an already decoded image (what the server gets from a `data:` URL).
    public func context(image decoded: RGBImage, container: ModelContainer, channels: ChannelOrder? = nil,
                        captionTokens: Int = 64) throws -> String {
        var outputs: [(ExpertKind, String)] = []
        for kind in kinds {
            switch kind {
            case .ocr:
                outputs.append((.ocr, try ocr!.recognize(decoded)))
            case .caption:
                guard container.model.adapter?.visual != nil, container.clip != nil else {
                    throw AdapterError.invalidArgument("--expert caption needs an adapter with a visual branch (e.g. CAPTION-7B) and --clip")
                }
                let image = try container.encodeImage(decoded, channels: channels)
                let session = try container.makeSession(image: image)
                let prompt = container.tokenizer.encodePrompt(PromptTemplate.alpaca("Generate caption of this image"))
                let r = try session.generate(prompt: prompt, maxNewTokens: captionTokens, sampling: .greedy)
                outputs.append((.caption, r.text.trimmingCharacters(in: .whitespacesAndNewlines)))
            }
        }
        return expertContext(outputs)
    }
}

/// Where the experts' text goes in the prompt (`--context-layout`; measured on examples/documents, see the README).
public enum ContextLayout: String, CaseIterable, Sendable {
    /// The paper's way: the Alpaca template's `### Input:` (other templates: `before`).
    case input
    /// "Context:\n{text}\n\n{question}" in the user's text.
    case before
    /// "{question}\n\n{text}" in the user's text (the experts' text opens with its own "Text in the image:").
    case after
    /// The text fenced as a document, then the question: "Document:\n\"\"\"\n{text}\n\"\"\"\n\n{question}".
    case document
}

/// A prompt with expert context laid out as `layout` says: with `.input` and the alpaca template the context is
/// the input (after the user's own input, if any), as the official with-input template carries it; otherwise
/// it joins the question in the user's text.
public func promptWithContext(_ prompt: String, context: String, template: PromptTemplate, input: String?,
                              layout: ContextLayout = .input) -> (prompt: String, input: String?) {
    switch (layout, template) {
    case (.input, .alpaca):
        return (prompt, input.map { $0.isEmpty ? context : $0 + "\n\n" + context } ?? context)
    case (.input, _), (.before, _):
        return ("Context:\n" + context + "\n\n" + prompt, input)
    case (.after, _):
        return (prompt + "\n\n" + context, input)
    case (.document, _):
        return ("Document:\n\"\"\"\n" + context + "\n\"\"\"\n\n" + prompt, input)
    }
}
