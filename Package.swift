// swift-tools-version:6.0
// llama-adapter-swift: LLaMA-Adapter V2 in Swift, CPU-first. Targets follow the layers of DESIGN.md section 1.
import PackageDescription

let package = Package(
    name: "llama-adapter-swift",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "llama-adapter", targets: ["llama-adapter"]),
        // The library API: `import LlamaAdapter` gives ModelContainer, Session, ChatSession and the layers below.
        .library(name: "LlamaAdapter", targets: ["LlamaAdapter"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // OpenBLAS on Linux; on macOS the CBLAS module is unused and Accelerate is imported instead.
        .systemLibrary(
            name: "CBLAS",
            path: "Sources/CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // SIMD kernels that need F16C/AVX2/AVX-512: selected per function with target attributes
        // and runtime CPU dispatch, so no unsafe compiler flags are needed.
        .target(name: "CKernels", path: "Sources/CKernels"),
        .target(
            name: "AdapterCore",
            dependencies: [
                "CKernels",
                .target(name: "CBLAS", condition: .when(platforms: [.linux])),
            ]
        ),
        // libjpeg-turbo and libpng for image decoding, each found through pkg-config (one name per system library,
        // hence two targets) so that Homebrew's /opt/homebrew works as well as Debian's /usr.
        .systemLibrary(
            name: "CJPEG",
            path: "Sources/CJPEG",
            pkgConfig: "libjpeg",
            providers: [.apt(["libjpeg62-turbo-dev"]), .brew(["jpeg-turbo"])]
        ),
        .systemLibrary(
            name: "CImageCodecs",
            path: "Sources/CImageCodecs",
            pkgConfig: "libpng",
            providers: [.apt(["libpng-dev"]), .brew(["libpng"])]
        ),
        // Tesseract's C API for the OCR expert.
        .systemLibrary(
            name: "CTesseract",
            path: "Sources/CTesseract",
            pkgConfig: "tesseract",
            providers: [.apt(["libtesseract-dev", "tesseract-ocr-eng"]), .brew(["tesseract"])]
        ),
        // MPI for data-parallel training (Open MPI: Debian's libopenmpi-dev). Without it the shim's functions
        // say MPI is unavailable and the package still builds and trains as one process.
        .systemLibrary(
            name: "CMPI",
            path: "Sources/CMPI",
            pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev", "openmpi-bin"]), .brew(["open-mpi"])]
        ),
        .target(name: "AdapterFormats", dependencies: ["AdapterCore"]),
        .target(name: "AdapterVision", dependencies: ["AdapterCore", "AdapterFormats", "CJPEG", "CImageCodecs"]),
        .target(name: "AdapterTokenizers", dependencies: []),
        .target(name: "AdapterModel", dependencies: ["AdapterCore", "AdapterFormats", "AdapterVision"]),
        .target(name: "AdapterGeneration", dependencies: ["AdapterCore", "AdapterFormats", "AdapterVision", "AdapterModel", "AdapterTokenizers"]),
        .target(name: "AdapterTraining", dependencies: ["AdapterCore", "AdapterFormats", "AdapterVision", "AdapterModel", "AdapterTokenizers", "AdapterGeneration", "CMPI"]),
        .target(name: "AdapterExperts", dependencies: ["AdapterCore", "AdapterVision", "AdapterModel", "AdapterGeneration", "CTesseract"]),
        .target(name: "LlamaAdapter", dependencies: ["AdapterCore", "AdapterFormats", "AdapterVision", "AdapterModel", "AdapterTokenizers", "AdapterGeneration", "AdapterTraining", "AdapterExperts"]),
        // Fuzz harnesses over every parser of untrusted files, and the libFuzzer/replay executable (scripts/fuzz.sh).
        .target(name: "AdapterFuzz", dependencies: ["LlamaAdapter"]),
        .executableTarget(name: "llama-adapter-fuzz", dependencies: ["AdapterFuzz"]),
        // The OpenAI-compatible HTTP server, its continuous-batching scheduler and the web page.
        .target(
            name: "AdapterServer",
            dependencies: [
                "LlamaAdapter",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "llama-adapter",
            dependencies: [
                "LlamaAdapter",
                "AdapterServer",
                "CKernels",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // The CLI's ParsableCommand structs predate strict concurrency checking in swift-argument-parser's API.
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
        .testTarget(
            name: "AdapterTests",
            // The executable is a dependency so CLI tests can run the built binary.
            dependencies: ["LlamaAdapter", "AdapterServer", "AdapterFuzz", "llama-adapter", "llama-adapter-fuzz"],
            path: "Tests/AdapterTests",
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
    ],
    // Library targets build in the Swift 6 language mode (strict concurrency); the places where kernels
    // share raw buffers across threads say so with `@unchecked Sendable` or `nonisolated(unsafe)`.
    swiftLanguageModes: [.v6]
)
