// llama-adapter: the command-line tool. Every failure ends as one `error:` line on stderr and exit status 1
// (DESIGN.md section 3), including argument errors, which swift-argument-parser would otherwise exit 64 for.
import ArgumentParser
import Foundation
import LlamaAdapter
import CKernels

/// The root command.
struct LlamaAdapterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "llama-adapter",
        abstract: "LLaMA-Adapter V2 in Swift: run, score and inspect LLaMA models and adapters on the CPU.",
        subcommands: [Generate.self, Chat.self, Score.self, Tokenize.self, Preprocess.self, EncodeImage.self, Inspect.self, Bench.self, Finetune.self, Export.self, Serve.self, Shapes.self, Eval.self])
}

/// Put before every error line: under mpirun, the rank ("rank 1: ") when the job has several.
var errorPrefix = ""

/// The text with control characters shown as `\xNN`, so a name or path from a file stays on one line.
func escapingControlCharacters(_ text: String) -> String {
    text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? String(format: "\\x%02x", $0.value) : String($0) }.joined()
}

/// Prints one line to standard error.
func printError(_ message: String) {
    // One line, always: control characters from paths or file contents are shown escaped.
    FileHandle.standardError.write(Data(("error: " + errorPrefix + escapingControlCharacters(message) + "\n").utf8))
}

// Kernels allocate tile buffers of a few MB per call; glibc would map each afresh and the kernel clear its pages
// every time (a sixth of a training step). Keep such blocks on the heap and the heap untrimmed.
ck_keep_large_allocations()

// Ctrl-C or kill during a write: remove the unfinished temporary file, say so in one line (finetune and serve
// install their own handlers on top).
installTerminationNote("interrupted")

do {
    try checkSIMDCap()
    var command = try LlamaAdapterCommand.parseAsRoot()
    try command.run()
} catch let error where error is AdapterError || error is TokenizerError || error is GenerationError || error is SamplingError {
    // Our errors are one-line values whose description is the message.
    printError(String(describing: error))
    exit(1)
} catch {
    if LlamaAdapterCommand.exitCode(for: error) == .success {
        print(LlamaAdapterCommand.fullMessage(for: error))
        exit(0)
    }
    let message = LlamaAdapterCommand.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
    printError(message.hasPrefix("Error: ") ? String(message.dropFirst(7)) : message)
    exit(1)
}
