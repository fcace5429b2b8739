import CCrypt
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import POP3Server

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One line of a Dovecot passwd-file:
///
///     user:{SCHEME}hash:uid:gid:gecos:home:shell:extra_fields
///
/// Only the first two fields are required; `extra_fields` are space-separated `key=value`.
public struct PasswdEntry: Hashable, Sendable {
    public var user: String
    public var password: StoredPassword
    public var uid: String?
    public var gid: String?
    public var home: String?
    public var extraFields: [String: String]

    /// Parses one line; nil for comments and blank lines. Throws for a malformed line.
    public static func parse(line: Substring) throws(PasswdFileError) -> PasswdEntry? {
        let trimmed = line.drop(while: { $0 == " " || $0 == "\t" })
        if trimmed.isEmpty || trimmed.hasPrefix("#") { return nil }
        let fields = line.split(separator: ":", maxSplits: 7, omittingEmptySubsequences: false).map(String.init)
        guard fields.count >= 2, !fields[0].isEmpty else { throw .malformed("expected user:password") }
        func field(_ i: Int) -> String? { i < fields.count && !fields[i].isEmpty ? fields[i] : nil }
        var extra: [String: String] = [:]
        if let extraText = field(7) {
            for item in extraText.split(separator: " ") {
                if let eq = item.firstIndex(of: "=") {
                    extra[String(item[..<eq])] = String(item[item.index(after: eq)...])
                } else {
                    extra[String(item)] = ""
                }
            }
        }
        return PasswdEntry(
            user: fields[0], password: StoredPassword(fields[1]),
            uid: field(2), gid: field(3), home: field(5), extraFields: extra
        )
    }
}

public enum PasswdFileError: Error, Hashable, Sendable, CustomStringConvertible {
    case malformed(String)
    case unreadable(path: String, reason: String)

    public var description: String {
        switch self {
        case .malformed(let why): "malformed line: \(why)"
        case .unreadable(let path, let reason): "cannot read passwd-file \(path): \(reason)"
        }
    }
}

/// A password as stored: `{SCHEME}data`. Without a `{SCHEME}` prefix the scheme is CRYPT, as
/// Dovecot's passwd-file assumes.
public struct StoredPassword: Hashable, Sendable {
    public var scheme: String
    public var data: String

    public init(_ field: String) {
        if field.hasPrefix("{"), let close = field.firstIndex(of: "}") {
            scheme = field[field.index(after: field.startIndex)..<close].uppercased()
            data = String(field[field.index(after: close)...])
        } else {
            scheme = "CRYPT"
            data = field
        }
    }

    /// Schemes whose data is a crypt(3) string, verified by libxcrypt.
    static let cryptSchemes: Set<String> = ["CRYPT", "DES-CRYPT", "MD5-CRYPT", "SHA256-CRYPT", "SHA512-CRYPT", "BLF-CRYPT"]

    /// Whether this scheme can be verified here.
    public var isSupported: Bool {
        scheme == "PLAIN" || scheme == "CLEAR" || Self.cryptSchemes.contains(scheme)
    }

    /// Checks a password. Blocking and possibly slow (bcrypt, SHA-crypt): thread pool only.
    /// Comparisons are constant-time.
    public func verify(_ password: String) -> Bool {
        switch scheme {
        case "PLAIN", "CLEAR":
            return !data.isEmpty && constantTimeEqual(Array(password.utf8), Array(data.utf8))
        case _ where Self.cryptSchemes.contains(scheme):
            guard !data.isEmpty, let computed = Self.crypt(password, setting: data) else { return false }
            return constantTimeEqual(Array(computed.utf8), Array(data.utf8))
        default:
            return false
        }
    }

    /// Hashes a password with crypt(3) and a fresh random salt. `prefix` selects the method:
    /// `$6$` SHA512-CRYPT, `$5$` SHA256-CRYPT, `$2y$` BLF-CRYPT. Returns `{SCHEME}hash`.
    public static func hash(_ password: String, scheme: String) -> String? {
        let prefix: String
        switch scheme.uppercased() {
        case "SHA512-CRYPT": prefix = "$6$"
        case "SHA256-CRYPT": prefix = "$5$"
        case "BLF-CRYPT": prefix = "$2y$"
        case "PLAIN", "CLEAR": return "{\(scheme.uppercased())}\(password)"
        default: return nil
        }
        var salt = [CChar](repeating: 0, count: Int(CRYPT_GENSALT_OUTPUT_SIZE))
        guard crypt_gensalt_rn(prefix, 0, nil, 0, &salt, Int32(salt.count)) != nil else { return nil }
        let setting = String(decoding: salt.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return crypt(password, setting: setting).map { "{\(scheme.uppercased())}\($0)" }
    }

    /// crypt(3) through libxcrypt's reentrant `crypt_rn`; nil on failure (bad setting, NUL).
    static func crypt(_ password: String, setting: String) -> String? {
        guard !password.utf8.contains(0) else { return nil }
        let data = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
        defer { data.deallocate() }
        memset(data, 0, MemoryLayout<crypt_data>.size)
        guard let result = crypt_rn(password, setting, data, Int32(MemoryLayout<crypt_data>.size)) else { return nil }
        let text = String(cString: result)
        // libxcrypt returns a string starting with "*" on failure.
        return text.hasPrefix("*") ? nil : text
    }
}

/// The users in a Dovecot-style passwd-file, re-read whenever the file changes.
///
/// An unknown user and a wrong password both throw ``POP3BackendError/authFailed``; for an
/// unknown user a real hash from the file is computed anyway, so both take about as long.
public final class PasswdFileDatabase: UserDatabase, Sendable {
    public let path: String
    private let threadPool: NIOThreadPool
    private let logger: Logger
    private let state = NIOLockedValueBox<Snapshot?>(nil)

    struct Snapshot: Sendable {
        var identity: FileIdentity
        var users: [String: PasswdEntry]
        /// A hash to verify for unknown users, so they cost what a known user costs.
        var decoy: StoredPassword?
    }

    struct FileIdentity: Equatable, Sendable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var mtimeSeconds: Int
        var mtimeNanoseconds: Int
    }

    public init(path: String, threadPool: NIOThreadPool = .singleton, logger: Logger = Logger(label: "postie.passwd")) {
        self.path = path
        self.threadPool = threadPool
        self.logger = logger
    }

    public func authenticate(_ credentials: Credentials) async throws -> AuthenticatedUser {
        let result: Result<AuthenticatedUser, POP3BackendError> = try await threadPool.runIfActive {
            self.authenticateBlocking(credentials)
        }
        return try result.get()
    }

    /// The scheme of the hash verified for unknown users (for tests and diagnostics).
    var decoyScheme: String? { state.withLockedValue { $0?.decoy?.scheme } }

    /// Loads the file now (startup check); throws if it cannot be read.
    public func load() async throws {
        try await threadPool.runIfActive { _ = try self.currentSnapshot() }
    }

    private func authenticateBlocking(_ credentials: Credentials) -> Result<AuthenticatedUser, POP3BackendError> {
        let snapshot: Snapshot
        do {
            snapshot = try currentSnapshot()
        } catch {
            return .failure(.temporary("\(error)"))
        }
        guard let entry = snapshot.users[credentials.user] else {
            _ = snapshot.decoy?.verify(credentials.password)
            return .failure(.authFailed)
        }
        guard entry.password.isSupported else {
            logger.error("passwd-file(\(path)): user \(entry.user): unknown password scheme {\(entry.password.scheme)}")
            _ = snapshot.decoy?.verify(credentials.password)
            return .failure(.authFailed)
        }
        guard entry.password.verify(credentials.password) else { return .failure(.authFailed) }
        return .success(AuthenticatedUser(name: entry.user, home: entry.home, extraFields: entry.extraFields))
    }

    /// The parsed file, re-read if its inode, size or mtime changed. Blocking.
    private func currentSnapshot() throws(PasswdFileError) -> Snapshot {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw .unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        let identity = FileIdentity(
            device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
            mtimeSeconds: Int(st.st_mtim.tv_sec), mtimeNanoseconds: Int(st.st_mtim.tv_nsec)
        )
        if let cached = state.withLockedValue({ $0 }), cached.identity == identity { return cached }
        let snapshot = try read(identity: identity)
        state.withLockedValue { $0 = snapshot }
        return snapshot
    }

    private func read(identity: FileIdentity) throws(PasswdFileError) -> Snapshot {
        guard let file = fopen(path, "re") else {
            throw .unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        var users: [String: PasswdEntry] = [:]
        var decoy: StoredPassword?
        for (number, line) in String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            do {
                guard let entry = try PasswdEntry.parse(line: line) else { continue }
                if users[entry.user] != nil {
                    logger.warning("passwd-file(\(path)): line \(number + 1): duplicate user \(entry.user), first one wins")
                    continue
                }
                users[entry.user] = entry
                if decoy == nil, StoredPassword.cryptSchemes.contains(entry.password.scheme) { decoy = entry.password }
            } catch {
                logger.warning("passwd-file(\(path)): line \(number + 1): \(error)")
            }
        }
        logger.info("passwd-file(\(path)): loaded \(users.count) users")
        return Snapshot(identity: identity, users: users, decoy: decoy)
    }
}
