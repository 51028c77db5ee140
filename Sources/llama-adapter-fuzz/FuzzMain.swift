// libFuzzer entry point (built with -DFUZZING -sanitize=fuzzer,address by scripts/fuzz.sh; the target comes
// from LLAMA_ADAPTER_FUZZ_TARGET), and otherwise a replayer: `llama-adapter-fuzz TARGET FILE...` runs each
// file through the harness, so a crash input can be reproduced under a debugger or a plain build.
import Foundation
import AdapterFuzz

#if FUZZING
private let target: FuzzTarget = {
    guard let name = ProcessInfo.processInfo.environment["LLAMA_ADAPTER_FUZZ_TARGET"], let t = FuzzTarget(rawValue: name) else {
        fatalError("set LLAMA_ADAPTER_FUZZ_TARGET to one of: " + FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))
    }
    return t
}()

/// libFuzzer calls this once per generated input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzHarness.run(target, UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// libFuzzer's driver (SwiftPM names the executable's entry point itself, so libFuzzer's own `main` is not used).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32
#endif

/// Runs libFuzzer (fuzzing build) or replays files through a harness (`llama-adapter-fuzz TARGET FILE...`).
@main
struct FuzzMain {
    static func main() throws {
        #if FUZZING
        _ = target
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput))
        #else
        let args = CommandLine.arguments.dropFirst()
        guard let name = args.first, let target = FuzzTarget(rawValue: name) else {
            FileHandle.standardError.write(Data("usage: llama-adapter-fuzz TARGET FILE... (targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")))\n".utf8))
            exit(2)
        }
        for path in args.dropFirst() {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            bytes.withUnsafeBytes { FuzzHarness.run(target, $0) }
            print("ok \(path)")
        }
        #endif
    }
}
