import Foundation

/// Prints a JSON object on one line: keys sorted, slashes unescaped, as the command-line contract expects.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    let data = try encoder.encode(value)
    FileHandle.standardOutput.write(data)
    FileHandle.standardOutput.write(Data("\n".utf8))
}

/// Writes text to stdout immediately (streaming output is not line-buffered).
func writeOut(_ s: String) {
    FileHandle.standardOutput.write(Data(s.utf8))
}
