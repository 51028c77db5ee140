import ArgumentParser
import Foundation
import LlamaAdapter

/// `llama-adapter inspect`: lists the tensors (name, dtype, shape) and metadata of a weights file or folder.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List tensors and metadata of a checkpoint (.pth or official folder).")

    @Argument(help: "A .pth file or an official LLaMA folder.")
    var path: String

    @Flag(help: "Print one JSON object.")
    var json = false

    struct TensorRow: Encodable {
        var name: String
        var dtype: String
        var shape: [Int]
    }

    struct Output: Encodable {
        var path: String
        var format: String
        var tensor_count: Int
        var parameter_count: Int
        var tensors: [TensorRow]
        var metadata: [String: JSONValue]
    }

    func run() throws {
        let source: TensorSource
        var metadata: [String: JSONValue] = [:]
        let format: String
        let opened = try FileFormat.openTensors(path: path)
        source = opened.0
        format = opened.1.rawValue
        if opened.1 == .metaFolder, let data = FileManager.default.contents(atPath: path + "/params.json"),
           let obj = try? JSONSerialization.jsonObject(with: data) {
            metadata["params.json"] = JSONValue(any: obj)
        }
        for (k, v) in source.metadata { metadata[k] = JSONValue(v) }
        if let summary = AdapterWeights.summarize(source) { metadata["adapter"] = JSONValue(.dict(summary)) }
        let rows = source.tensorNames.compactMap { name -> TensorRow? in
            guard let info = source.info(name) else { return nil }
            return TensorRow(name: name, dtype: info.dtype.rawValue, shape: info.shape)
        }
        let params = [Int].totalElements(rows.map(\.shape))
        if json {
            try printJSON(Output(path: path, format: format, tensor_count: rows.count, parameter_count: params,
                                 tensors: rows, metadata: metadata))
            return
        }
        // Names and metadata come from the file: control characters are escaped so each row stays one line.
        print(escapingControlCharacters("\(path): \(format), \(rows.count) tensors, \(params) parameters"))
        let names = rows.map { escapingControlCharacters($0.name) }
        let width = names.map(\.count).max() ?? 0
        for (r, name) in zip(rows, names) {
            print(name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + r.dtype.padding(toLength: 5, withPad: " ", startingAt: 0)
                  + "  " + "[" + r.shape.map(String.init).joined(separator: ", ") + "]")
        }
        if !metadata.isEmpty {
            print("metadata:")
            for k in metadata.keys.sorted() { print(escapingControlCharacters("  \(k): \(metadata[k]!.compactDescription)")) }
        }
    }
}

/// A JSON value for printing metadata of any format.
indirect enum JSONValue: Encodable {
    case int(Int), double(Double), bool(Bool), string(String), array([JSONValue]), object([String: JSONValue]), null

    init(_ v: MetadataValue) {
        switch v {
        case .int(let i): self = .int(i)
        case .double(let d): self = .double(d)
        case .bool(let b): self = .bool(b)
        case .string(let s): self = .string(s)
        // Vocabularies (49152 tokens, merges) would drown the listing: long arrays become a count.
        case .array(let a) where a.count > 64: self = .string("<array of \(a.count) values>")
        case .array(let a): self = .array(a.map(JSONValue.init))
        case .dict(let d): self = .object(d.mapValues(JSONValue.init))
        case .none: self = .null
        }
    }

    init(any: Any) {
        switch any {
        case let b as Bool where type(of: any) == type(of: true as NSNumber) || any is Bool: self = .bool(b)
        case let i as Int: self = .int(i)
        case let d as Double: self = .double(d)
        case let s as String: self = .string(s)
        case let a as [Any]: self = .array(a.map { JSONValue(any: $0) })
        case let o as [String: Any]: self = .object(o.mapValues { JSONValue(any: $0) })
        default: self = .null
        }
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .bool(let b): try c.encode(b)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        case .null: try c.encodeNil()
        }
    }

    /// One-line rendering for the text output.
    var compactDescription: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).flatMap { String(data: $0, encoding: .utf8) } ?? "?"
    }
}
