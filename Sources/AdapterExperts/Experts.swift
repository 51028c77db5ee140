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

/// A prompt with expert context, as the official Alpaca with-input template carries it (`### Input:`): with
/// `template` alpaca the context is the input (after the user's own input, if any); with other templates it
/// precedes the question in the user's text.
public func promptWithContext(_ prompt: String, context: String, template: PromptTemplate, input: String?) -> (prompt: String, input: String?) {
    switch template {
    case .alpaca:
        return (prompt, input.map { $0.isEmpty ? context : $0 + "\n\n" + context } ?? context)
    case .chat, .raw:
        return ("Context:\n" + context + "\n\n" + prompt, input)
    }
}
