// swift-tools-version: 6.1
import PackageDescription

// Fuzz targets for Postie, in their own package so that the root package's `swift build` and
// `swift test` never compile them. Build and run them with scripts/fuzz (docs/fuzzing.md):
//
//     swift build -c release --package-path Fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing
//
// `-enable-testing` lets the targets `@testable import` the internal parsers (PROXY headers,
// postie-uidlist, password schemes, the retention index) without making them public.
let package = Package(
    name: "postie-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "postie", path: ".."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "PostieFuzz",
            dependencies: [
                .product(name: "POP3Core", package: "postie"),
                .product(name: "POP3Server", package: "postie"),
                .product(name: "LMTPCore", package: "postie"),
                .product(name: "SASL", package: "postie"),
                .product(name: "ServerKit", package: "postie"),
                .product(name: "Passwords", package: "postie"),
                .product(name: "MaildirStore", package: "postie"),
                .product(name: "MailBackend", package: "postie"),
                .product(name: "POP3Fetch", package: "postie"),
                .product(name: "MboxStore", package: "postie"),
                .product(name: "LDAPDirectory", package: "postie"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            // A single-threaded harness with process-wide state (libFuzzer calls in on one thread).
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
    ]
)
