import ArgumentParser
import DurableFiles
import Logging
import MailBackend
import MaildirStore
import NIOCore
import NIOPosix
import POP3Fetch

#if canImport(Glibc)
import Glibc
#endif

/// The store flags of `postie mailbox`: the same names, config file and meaning as
/// `postie serve`, so a command finds the mailbox the server serves.
public struct MailboxStoreOptions: ParsableArguments, Sendable {
    @OptionGroup public var stores: StoreOptions
    @Option(help: ArgumentHelp("Read settings from this YAML file (the server's).", valueName: "file")) public var config: String?

    public init() {}
}

/// `postie mailbox`: deleted-mail retention (list, undelete) and export, on the store the
/// server's settings name.
public struct MailboxAdmin: Sendable {
    let settings: ServerSettings

    /// EX_NOUSER, EX_CANTCREAT, EX_TEMPFAIL (sysexits.h).
    public static let noSuchUser: Int32 = 67
    public static let cannotCreate: Int32 = 73
    public static let temporaryFailure: Int32 = 75

    /// The settings that decide where users and mail are and how UIDLs and names look.
    static let storeSettings: [Setting] = [
        .store, .passwdFile, .maildir, .mbox, .dovecotControl, .databaseURLFile, .databasePoolSize, .databaseConnectTimeout,
        .databaseKeepalive, .pop3UIDLFormat, .pop3ReuseXUIDL, .authUsernameFormat, .authDefaultDomain,
    ]

    /// The settings from the flags and `--config`; their errors are a usage error (exit 64).
    public static func load(_ options: MailboxStoreOptions) async throws -> MailboxAdmin {
        try await load(flags: FlagValues.collect(options).flags, configFile: options.config)
    }

    /// The same from collected flags; `also`: more settings whose errors matter to the command.
    static func load(flags: FlagValues, configFile: String?, also: [Setting] = []) async throws -> MailboxAdmin {
        let settings = await ServerSettings.load(flags: flags, configFile: configFile)
        // Only the settings that find users and mail matter here (a config file without a
        // listener, say, is fine).
        let relevant = (Self.storeSettings + also).flatMap { [settings.origin($0), "--" + ($0.spec.flag ?? $0.key)] }
        let problems = settings.errors.filter { problem in relevant.contains { problem.setting == $0 } || problem.setting == "--config" }
            .map(\.description)
        if !problems.isEmpty { throw ValidationError(problems.joined(separator: "\n")) }
        return MailboxAdmin(settings: settings)
    }

    /// Runs `body` with the store open and the user looked up (the name normalised as the
    /// server does). No such user: exit 67.
    func withUser<T: Sendable>(_ name: String, _ body: @escaping @Sendable (StoreFactory.Backend, AuthenticatedUser) async throws -> T) async throws -> T {
        let logger = StoreFactory.quietLogger
        let backend: StoreFactory.Backend
        do {
            backend = try await StoreFactory(settings).open(threadPool: .singleton, logger: logger, checkSchema: true)
        } catch {
            throw MailboxAdminError(status: Self.temporaryFailure, message: error.description)
        }
        if let passwdFile = backend.passwdFile { try await passwdFile.load() }
        let normalised = settings.usernameFormat.normalize(name)
        let result: Result<T, any Error> = await backend.withPool {
            do {
                guard let lookup = backend.users as? any UserLookup else {
                    throw MailboxAdminError(status: 70, message: "this user database cannot look users up")
                }
                guard let user = try await lookup.lookUpUser(normalised) else {
                    throw MailboxAdminError(status: Self.noSuchUser, message: "no user \(normalised)")
                }
                return .success(try await body(backend, user))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    func retaining(_ backend: StoreFactory.Backend) throws -> any RetainingStore {
        guard let store = backend.store as? any RetainingStore else {
            throw MailboxAdminError(status: 70, message: "this store keeps no deleted mail")
        }
        return store
    }

    /// The user's retained messages, oldest deletion first.
    public func deleted(user: String) async throws -> [RetainedMessage] {
        try await withUser(user) { backend, user in try await retaining(backend).deletedMessages(for: user) }
    }

    /// Gives retained messages back; returns those restored.
    public func undelete(user: String, _ selection: UndeleteSelection) async throws -> [RetainedMessage] {
        try await withUser(user) { backend, user in try await retaining(backend).undelete(for: user, selection) }
    }

    /// Where `export` writes.
    public enum ExportTarget: Sendable, Equatable {
        /// A new mbox file (mboxrd), each message with an `X-UIDL:` header first.
        case mbox(String)
        /// A Maildir, each message's UIDL recorded in its `dovecot-uidlist` (`P` field).
        case maildir(String)

        /// `mbox:FILE` or `maildir:DIR`.
        public init?(_ text: String) {
            if text.hasPrefix("mbox:"), text.count > 5 { self = .mbox(String(text.dropFirst(5))) }
            else if text.hasPrefix("maildir:"), text.count > 8 { self = .maildir(String(text.dropFirst(8))) }
            else { return nil }
        }
    }

    /// Copies the user's mailbox under its maildrop lock (waiting up to `lockWait` seconds for
    /// a session to end), so the copy is the state between two UPDATEs, never in one. Returns
    /// the messages and octets written.
    public func export(user: String, to target: ExportTarget, lockWait: Double) async throws -> (messages: Int, octets: Int) {
        try await withUser(user) { backend, user in
            let deadline = NIODeadline.now() + .milliseconds(Int64(lockWait * 1000))
            var maildrop: (any Maildrop)?
            while maildrop == nil {
                do {
                    maildrop = try await backend.store.openMaildrop(for: user)
                } catch let error as BackendError where error.kind == .inUse && NIODeadline.now() < deadline {
                    try await Task.sleep(for: .milliseconds(100))
                } catch let error as BackendError where error.kind == .inUse {
                    throw MailboxAdminError(status: Self.temporaryFailure, message: "\(user.name): the mailbox stayed in use for \(Int(lockWait)) s; try again")
                }
            }
            let opened = maildrop!
            do {
                let result = try await Self.write(opened, to: target)
                await opened.abandon()
                return result
            } catch {
                await opened.abandon()
                throw error
            }
        }
    }

    static func write(_ maildrop: any Maildrop, to target: ExportTarget) async throws -> (messages: Int, octets: Int) {
        var octets = 0
        switch target {
        case .maildir(let path):
            let importer: MaildirImporter
            do {
                importer = try MaildirImporter(path: path, lockTimeout: 30)
            } catch {
                throw MailboxAdminError(status: cannotCreate, message: "\(path): \(error)")
            }
            defer { importer.close() }
            for (index, message) in maildrop.messages.enumerated() {
                if try importer.state(of: message.uid) == .done { continue }
                let writer = try importer.beginMessage(uidl: message.uid)
                do {
                    for try await chunk in try await maildrop.body(of: index, lines: nil) {
                        try writer.write(Array(chunk.readableBytesView))
                        octets += chunk.readableBytes
                    }
                    try writer.complete(listedSize: message.size)
                } catch {
                    writer.discard()
                    throw error
                }
                try importer.finish(uidl: message.uid)
                if importer.pendingCount >= 200 { try importer.flush() }
            }
            try importer.flush()
        case .mbox(let path):
            guard !POSIX.nameExists(path) else {
                throw MailboxAdminError(status: cannotCreate, message: "\(path) exists; export writes a new mbox")
            }
            let temporary = path + ".postie-export.tmp"
            let fd: Int32
            do {
                fd = try POSIX.open(temporary, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
            } catch {
                throw MailboxAdminError(status: cannotCreate, message: "\(error)")
            }
            var open = true
            defer { if open { close(fd) } }
            do {
                let now = Int(time(nil))
                for (index, message) in maildrop.messages.enumerated() {
                    var bytes = Array("X-UIDL: \(message.uid)\r\n".utf8)
                    bytes.reserveCapacity(message.size + 64)
                    for try await chunk in try await maildrop.body(of: index, lines: nil) {
                        bytes += chunk.readableBytesView
                    }
                    octets += message.size
                    try POSIX.writeAll(fd, Mboxrd.entry(from: "MAILER-DAEMON", time: now, message: bytes), path: temporary)
                }
                try POSIX.fsync(fd, path: temporary)
                close(fd)
                open = false
                try POSIX.rename(temporary, path)
                try POSIX.fsyncDirectory(POSIX.directoryName(path))
            } catch {
                unlink(temporary)
                throw error
            }
        }
        return (maildrop.messages.count, octets)
    }
}

/// A `postie mailbox` failure with its exit status (sysexits.h).
public struct MailboxAdminError: Error, CustomStringConvertible {
    public var status: Int32
    public var message: String
    public var description: String { message }
}
