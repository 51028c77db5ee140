/// Prompt templates. `alpaca` is the official LLaMA-Adapter `format_prompt`; `raw` passes text through;
/// `chat` renders the model's own chat template.
public enum PromptTemplate: String, Sendable, CaseIterable {
    case raw, alpaca, chat

    static let alpacaHeaderNoInput =
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    static let alpacaHeaderWithInput =
        "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n"

    /// Formats `instruction` (and `input`) as the official `format_prompt`: nil selects the no-input
    /// template; an empty string still selects the with-input one. Built by concatenation, so braces in
    /// the user's text are never taken for template fields.
    public static func alpaca(_ instruction: String, input: String? = nil) -> String {
        if let input {
            return alpacaHeaderWithInput + "### Instruction:\n" + instruction + "\n\n### Input:\n" + input + "\n\n### Response:"
        }
        return alpacaHeaderNoInput + "### Instruction:\n" + instruction + "\n\n### Response:"
    }
}
