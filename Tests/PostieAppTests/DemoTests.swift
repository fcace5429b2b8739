import Foundation
import Testing

@testable import PostieApp

@Suite("The demo setup")
struct DemoTests {
    @Test func createsAUserAndAMailbox() throws {
        let setup = try Demo.create()
        defer { try? FileManager.default.removeItem(atPath: setup.directory) }
        let passwd = try String(contentsOfFile: setup.passwdFile, encoding: .utf8)
        #expect(passwd.contains("\ndemo:{SHA512-CRYPT}$6$"))
        let new = try FileManager.default.contentsOfDirectory(atPath: setup.directory + "/mail/demo/new")
        #expect(new.count == Demo.messages.count)
        #expect(setup.maildirTemplate == setup.directory + "/mail/%u")

        var options = try ServeOptions.parse([])
        Demo.apply(setup, to: &options)
        #expect(options.listen == ["127.0.0.1:1110"])
        #expect(options.stores.passwdFile == setup.passwdFile)

        var withListener = try ServeOptions.parse(["--listen-tls", "127.0.0.1:1995"])
        Demo.apply(setup, to: &withListener)
        #expect(withListener.listen.isEmpty)
    }

    @Test func demoSettingsAreValid() async throws {
        let setup = try Demo.create()
        defer { try? FileManager.default.removeItem(atPath: setup.directory) }
        var options = try ServeOptions.parse([])
        Demo.apply(setup, to: &options)
        let settings = await ServerSettings.load(options)
        #expect(settings.problems.isEmpty)
        #expect(Demo.instructions(setup: setup, listeners: settings.listeners).contains("curl pop3://127.0.0.1:1110/ -u demo:demo"))
    }
}
