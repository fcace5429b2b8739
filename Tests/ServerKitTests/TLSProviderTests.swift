import Foundation
import Testing

@testable import ServerKit

/// Self-signed certificates made with `openssl req` in a temporary folder.
private struct Certificates {
    let directory: String

    init() throws {
        directory = NSTemporaryDirectory() + "/postie-tls-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    /// `name`.pem and `name`.key, valid for `days`.
    @discardableResult
    func make(_ name: String, days: Int) throws -> (cert: String, key: String) {
        let cert = directory + "/\(name).pem", key = directory + "/\(name).key"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", key, "-out", cert, "-days", "\(days)", "-subj", "/CN=\(name)",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "openssl req failed")
        return (cert, key)
    }

    func copy(_ from: String, to: String) throws {
        try? FileManager.default.removeItem(atPath: to)
        try FileManager.default.copyItem(atPath: from, toPath: to)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

@Suite("TLSProvider: loading, checking and reloading certificates")
struct TLSProviderTests {
    static func days(_ expiry: Int, from now: Date = Date()) -> Int {
        Int((Double(expiry) - now.timeIntervalSince1970) / 86_400 + 0.5)
    }

    @Test func eachCertificatesExpiryIsKnown() throws {
        let files = try Certificates()
        defer { files.remove() }
        let main = try files.make("main", days: 30), other = try files.make("other", days: 5)
        let tls = try TLSProvider(settings: TLSSettings(certificates: [
            CertificateSpec(certificatePath: main.cert, keyPath: main.key),
            CertificateSpec(certificatePath: other.cert, keyPath: other.key, serverNames: ["other.example", "*.other.example"]),
        ]))
        #expect(tls.expiries.map(\.certificatePath) == [main.cert, other.cert])
        #expect(tls.expiries.map(\.serverNames) == [[], ["other.example", "*.other.example"]])
        #expect(tls.expiries.map { Self.days($0.notAfter) } == [30, 5])
        #expect(tls.earliestExpiry == tls.expiries[1].notAfter)
    }

    /// A key that is not the certificate's is refused, for the default certificate and (since
    /// it would only fail at handshake time) for an SNI one.
    @Test(arguments: [false, true])
    func aKeyThatIsNotTheCertificatesIsRefused(sni: Bool) throws {
        let files = try Certificates()
        defer { files.remove() }
        let main = try files.make("main", days: 30), other = try files.make("other", days: 30)
        var specs = [CertificateSpec(certificatePath: main.cert, keyPath: sni ? main.key : other.key)]
        if sni { specs.append(CertificateSpec(certificatePath: other.cert, keyPath: main.key, serverNames: ["other.example"])) }
        let error = #expect(throws: TLSSetupError.self) { try TLSProvider(settings: TLSSettings(certificates: specs)) }
        #expect(error?.description.contains("cannot be used together") == true)
        #expect(error?.description.contains(sni ? other.cert : main.cert) == true)
    }

    /// A reload reads the new files; one that fails keeps what was loaded.
    @Test func aFailedReloadKeepsTheOldCertificates() throws {
        let files = try Certificates()
        defer { files.remove() }
        let old = try files.make("old", days: 30), new = try files.make("new", days: 60), wrong = try files.make("wrong", days: 90)
        let cert = files.directory + "/cert.pem", key = files.directory + "/key.pem"
        try files.copy(old.cert, to: cert)
        try files.copy(old.key, to: key)
        let tls = try TLSProvider(settings: TLSSettings(certificates: [CertificateSpec(certificatePath: cert, keyPath: key)]))
        #expect(Self.days(tls.expiries[0].notAfter) == 30)

        try files.copy(new.cert, to: cert)
        try files.copy(wrong.key, to: key)
        #expect(throws: TLSSetupError.self) { try tls.reload() }
        #expect(Self.days(tls.expiries[0].notAfter) == 30)

        try files.copy(new.key, to: key)
        try tls.reload()
        #expect(Self.days(tls.expiries[0].notAfter) == 60)
    }
}
