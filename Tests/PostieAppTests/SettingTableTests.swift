import ArgumentParser
import Configuration
import Foundation
import Testing

@testable import PostieApp

@Suite("The settings table")
struct SettingTableTests {
    @Test func keysAndFlagsAreUnique() {
        let keys = Setting.allCases.map(\.key)
        #expect(Set(keys).count == keys.count)
        let flags = Setting.allCases.compactMap(\.spec.flag)
        #expect(Set(flags).count == flags.count)
        for setting in Setting.allCases {
            #expect(setting.key.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "_" }, "\(setting.key) is not snake_case")
            #expect(!setting.spec.help.isEmpty)
        }
    }

    @Test func flagsNameTheirSetting() {
        #expect(Setting(flag: "--listen-tls") == .listenTLS)
        #expect(Setting(flag: "trusted-network") == .trustedNetworks)
        #expect(Setting(flag: "--no-such-flag") == nil)
    }

    /// Every setting with a flag is an option of `serve`, and its value is collected under
    /// that setting: the `@Option` line exists and matches the table.
    @Test(arguments: Setting.allCases.filter { $0.spec.flag != nil })
    func everyFlagIsParsedAndCollected(setting: Setting) throws {
        let flag = "--" + setting.spec.flag!
        let arguments = setting.spec.valueName == nil ? [flag] : [flag, "7"]
        let options = try ServeOptions.parse(arguments)
        let (flags, _) = FlagValues.collect(options)
        #expect(Array(flags.values.keys) == [setting])
    }

    @Test func onlyConfigIsNoSetting() throws {
        let (flags, others) = FlagValues.collect(try ServeOptions.parse([]))
        #expect(others == ["config"])
        #expect(flags.values.isEmpty)
    }

    @Test func helpComesFromTheTable() {
        let help = ServeOptions.helpMessage(columns: 1000)
        for setting in Setting.allCases {
            guard let flag = setting.spec.flag else { continue }
            #expect(help.contains("--\(flag)"))
            #expect(help.contains(setting.spec.help), "help of --\(flag)")
        }
    }

    @Test func collectsListsAndSwitches() throws {
        let options = try ServeOptions.parse(["--listen", "127.0.0.1:110", "--listen", "[::1]:110", "--apop", "--idle-timeout", "30", "--database-pool-size", "3"])
        let (flags, _) = FlagValues.collect(options)
        #expect(flags[.listen] == .stringArray(["127.0.0.1:110", "[::1]:110"]))
        #expect(flags[.apop] == .bool(true))
        #expect(flags[.idleTimeout] == .int(30))
        #expect(flags[.databasePoolSize] == .int(3))
        #expect(flags[.requireTLS] == nil)
    }

    /// docs/configuration.md has a row for every key.
    @Test func docsListEveryKey() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let docs = try String(contentsOf: root.appendingPathComponent("docs/configuration.md"), encoding: .utf8)
        for setting in Setting.allCases {
            #expect(docs.contains("`\(setting.key)`"), "docs/configuration.md does not document \(setting.key)")
        }
    }
}
