import Foundation
import SwiftASN1
import Testing
import X509

@testable import PostieApp

@Suite("The demo setup")
struct DemoTests {
    @Test func createsAUserAndAMailbox() throws {
        let setup = try Demo.create()
        defer { try? FileManager.default.removeItem(atPath: setup.directory) }
        let passwd = try String(contentsOfFile: setup.passwdFile, encoding: .utf8)
        #expect(passwd.contains("\ndemo:{SCRAM-SHA-256}"))
        let new = try FileManager.default.contentsOfDirectory(atPath: setup.directory + "/mail/demo/new")
        #expect(new.count == Demo.messages.count)
        #expect(setup.maildirTemplate == setup.directory + "/mail/%u")

        var options = try ServeOptions.parse([])
        Demo.apply(setup, to: &options)
        #expect(options.listen == ["127.0.0.1:1110"])
        #expect(options.listenTLS == ["127.0.0.1:1995"])
        #expect(options.tlsCert == setup.certificateFile && options.tlsKey == setup.keyFile)
        #expect(options.stores.passwdFile == setup.passwdFile)

        var withListener = try ServeOptions.parse(["--listen-tls", "127.0.0.1:1995"])
        Demo.apply(setup, to: &withListener)
        #expect(withListener.listen.isEmpty)
        #expect(withListener.tlsCert == setup.certificateFile)

        var ownCertificate = try ServeOptions.parse(["--tls-cert", "/etc/c.pem", "--tls-key", "/etc/k.pem"])
        Demo.apply(setup, to: &ownCertificate)
        #expect(ownCertificate.tlsCert == "/etc/c.pem" && ownCertificate.tlsKey == "/etc/k.pem")
    }

    @Test func theDemoCertificateIsSignedByTheDemoCAForLoopback() throws {
        let setup = try Demo.create()
        defer { try? FileManager.default.removeItem(atPath: setup.directory) }
        let ca = try Certificate(pemEncoded: String(contentsOfFile: setup.caFile, encoding: .utf8))
        let server = try Certificate(pemEncoded: String(contentsOfFile: setup.certificateFile, encoding: .utf8))
        let key = try Certificate.PrivateKey(pemEncoded: String(contentsOfFile: setup.keyFile, encoding: .utf8))
        #expect(server.issuer == ca.subject)
        #expect(ca.publicKey.isValidSignature(server.signature, for: server))
        #expect(key.publicKey == server.publicKey)
        let names = try #require(try server.extensions.subjectAlternativeNames)
        #expect(names.contains(.dnsName("localhost")))
        #expect(names.contains(.ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1]))))
        #expect(server.notValidAfter.timeIntervalSinceNow > 300 * 86400)
        var info = stat()
        #expect(stat(setup.keyFile, &info) == 0 && info.st_mode & 0o777 == 0o600)
    }

    @Test func demoSettingsAreValid() async throws {
        let setup = try Demo.create()
        defer { try? FileManager.default.removeItem(atPath: setup.directory) }
        var options = try ServeOptions.parse([])
        Demo.apply(setup, to: &options)
        let settings = await ServerSettings.load(options)
        #expect(settings.problems.isEmpty)
        let text = Demo.instructions(setup: setup, listeners: settings.listeners, tls: settings.tls != nil)
        #expect(text.contains("curl pop3://127.0.0.1:1110/ -u demo:demo"))
        #expect(text.contains("pop3s://127.0.0.1:1995/"))
        #expect(text.contains("postie check 127.0.0.1 --port 0 --tls-port 1995 --ca-file \(setup.caFile) --user demo"))
    }
}
