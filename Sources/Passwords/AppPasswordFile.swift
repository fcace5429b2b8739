import DurableFiles
import MailBackend
import NIOConcurrencyHelpers
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// The app passwords of a passwd-file's users, in a sidecar `FILE.app-passwords` next to it,
/// one line each, colon-separated like the passwd-file:
///
///     user:name:{SCHEME}hash:created:expires:last_used:last_address
///
/// Times are seconds since 1970 (empty: none); the address comes last, so an IPv6 address
/// keeps its colons. Edits (add, revoke, last use) take the passwd-file editor's lock on
/// `FILE.app-passwords.lock` and replace the file atomically; a new sidecar takes the
/// passwd-file's mode and owner. Logins read it without the lock, re-reading it only when it
/// changed; a missing sidecar means no app passwords. Comments and lines it cannot parse are
/// kept as they are.
public final class AppPasswordFile: AppPasswordStore, Sendable {
    /// The sidecar's path.
    public let path: String
    private let file: LockedTextFile
    private let threadPool: NIOThreadPool
    private let cache = NIOLockedValueBox<(FileIdentity, [String: [AppPassword]])?>(nil)

    /// The sidecar of `passwdFile`.
    public init(passwdFile: String, threadPool: NIOThreadPool = .singleton) {
        path = Self.path(forPasswdFile: passwdFile)
        file = LockedTextFile(path: path, modelForNewFile: passwdFile)
        self.threadPool = threadPool
    }

    public static func path(forPasswdFile passwdFile: String) -> String { passwdFile + ".app-passwords" }

    // MARK: - Lines

    /// Parses one line: nil for comments, blank and malformed lines.
    static func parse(_ line: Substring) -> (user: String, password: AppPassword)? {
        if line.isEmpty || line.hasPrefix("#") { return nil }
        // On Unicode scalars, as passwd-file lines: a mark such as U+0601 must not hide a ':'.
        let fields = line.unicodeScalars.split(separator: ":", maxSplits: 6, omittingEmptySubsequences: false)
            .map { String(Substring($0)) }
        guard fields.count == 7, !fields[0].isEmpty, !fields[1].isEmpty, let created = Int(fields[3]) else { return nil }
        func time(_ text: String) -> Int?? { text.isEmpty ? .some(nil) : Int(text).map { .some($0) } }
        guard let expires = time(fields[4]), let lastUsed = time(fields[5]) else { return nil }
        return (fields[0], AppPassword(
            name: fields[1], hash: fields[2], created: created, expires: expires, lastUsed: lastUsed,
            lastAddress: fields[6].isEmpty ? nil : fields[6]))
    }

    static func line(user: String, _ password: AppPassword) -> String {
        [user, password.name, password.hash, String(password.created), password.expires.map(String.init) ?? "",
         password.lastUsed.map(String.init) ?? "", password.lastAddress ?? ""].joined(separator: ":")
    }

    // MARK: - Reading (logins, `list`)

    public func appPasswords(of user: String) async throws -> [AppPassword] {
        try await threadPool.runIfActive { try self.current()[user] ?? [] }
    }

    /// Every user's app passwords, re-read if the file changed. Blocking.
    func current() throws -> [String: [AppPassword]] {
        guard let identity = FileIdentity.of(path) else {
            if errno == ENOENT {
                cache.withLockedValue { $0 = nil }
                return [:]
            }
            throw AppPasswordError.failed("cannot read \(path): \(String(cString: strerror(errno)))")
        }
        if let (cached, byUser) = cache.withLockedValue({ $0 }), cached == identity { return byUser }
        let bytes: [UInt8]
        do {
            bytes = try POSIX.readFile(path) ?? []
        } catch {
            throw AppPasswordError.failed("cannot read \(path): \(error)")
        }
        var byUser: [String: [AppPassword]] = [:]
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            if let (user, password) = Self.parse(line) { byUser[user, default: []].append(password) }
        }
        cache.withLockedValue { $0 = (identity, byUser) }
        return byUser
    }

    /// ``current()`` when that needs no I/O: the file is absent as the kernel's cache knows,
    /// or is the one parsed last. nil otherwise: then ``current()`` on a thread pool. Event
    /// loop safe.
    func currentWithoutBlocking() -> [String: [AppPassword]]? {
        switch FileIdentity.cached(path) {
        case .absent:
            return [:]
        case .present(let identity):
            guard let (cached, byUser) = cache.withLockedValue({ $0 }), cached == identity else { return nil }
            return byUser
        case .unknown:
            return nil
        }
    }

    // MARK: - Editing

    public func addAppPassword(_ password: AppPassword, for user: String) async throws {
        try AppPassword.validate(name: password.name)
        try await edit { lines in
            if lines.contains(where: { Self.parse(Substring($0)).map { $0.user == user && $0.password.name == password.name } ?? false }) {
                throw AppPasswordError.exists(user: user, name: password.name)
            }
            return ((), lines + [Self.line(user: user, password)])
        }
    }

    public func revokeAppPassword(named name: String, of user: String) async throws -> Bool {
        try await edit { lines in
            let kept = lines.filter { line in Self.parse(Substring(line)).map { !($0.user == user && $0.password.name == name) } ?? true }
            return kept.count == lines.count ? (false, nil) : (true, kept)
        }
    }

    /// Removes every app password of a user (the user was deleted). Blocking.
    func revokeAll(of user: String) throws {
        try file.edit { lines in
            let kept = lines.filter { line in Self.parse(Substring(line)).map { $0.user != user } ?? true }
            return ((), kept.count == lines.count ? nil : kept)
        }
    }

    public func recordAppPasswordUse(named name: String, of user: String, at time: Int, from address: String?) async throws {
        try await edit { lines in
            var updated = lines
            guard let index = lines.firstIndex(where: { Self.parse(Substring($0)).map { $0.user == user && $0.password.name == name } ?? false }),
                  var password = Self.parse(Substring(lines[index]))?.password
            else { return ((), nil) }
            password.lastUsed = time
            // A newline would split the line; nothing else in an address can (it is the last field).
            password.lastAddress = address.flatMap { $0.contains(where: \.isNewline) ? nil : $0 }
            updated[index] = Self.line(user: user, password)
            return ((), updated)
        }
    }

    /// A locked edit on the thread pool; store failures become ``AppPasswordError/failed(_:)``.
    private func edit<T: Sendable>(_ body: @escaping @Sendable ([String]) throws -> (T, [String]?)) async throws -> T {
        try await threadPool.runIfActive {
            do {
                return try self.file.edit(body)
            } catch let error as UserEditError {
                throw AppPasswordError.failed(error.description)
            }
        }
    }
}
