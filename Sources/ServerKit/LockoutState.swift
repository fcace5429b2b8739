import DurableFiles
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The lockouts saved across restarts (`lockout_state`): a small text file, one lockout a line,
///
///     # postie lockouts: ADDRESS UNTIL (Unix seconds) FAILURES
///     192.0.2.7 1796112000 10
///
/// replaced atomically (``POSIX/writeAtomically(_:_:mode:owner:)``, mode 0600) and read once
/// at start. Only lockouts are kept: failure counts and wrong-password hashes stay in memory.
public struct LockoutStateFile: Sendable {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    static let header = "# postie lockouts: ADDRESS UNTIL (Unix seconds) FAILURES\n"

    /// The file's text for lockouts in force at wall-clock second `now`.
    public static func encode(_ records: [LockoutRecord], now: Int) -> String {
        var text = header
        for record in records where record.remaining > .zero && record.hasIPAddress {
            // Rounded up: a lockout never ends early by being saved.
            let seconds = (record.remaining.nanoseconds + 999_999_999) / 1_000_000_000
            text += "\(record.address) \(now + Int(seconds)) \(record.failures)\n"
        }
        return text
    }

    /// The lockouts still in force at wall-clock second `now`, and how many lines were not
    /// lockouts (damaged); expired entries are dropped silently.
    public static func decode(_ text: String, now: Int) -> (records: [LockoutRecord], damaged: Int) {
        var records: [LockoutRecord] = []
        var damaged = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("#") || line.allSatisfy(\.isWhitespace) { continue }
            let fields = line.split(separator: " ")
            guard fields.count == 3, CIDR.parseAddress(String(fields[0])) != nil,
                  let until = Int(fields[1]), let failures = Int(fields[2]), failures >= 0 else {
                damaged += 1
                continue
            }
            guard until > now else { continue }
            // A clock set far back must not make a lockout last for years.
            let seconds = min(until - now, 366 * 86_400)
            records.append(LockoutRecord(address: String(fields[0]), remaining: .seconds(Int64(seconds)), failures: failures))
        }
        return (records, damaged)
    }

    /// Reads the file (blocking); none if it does not exist.
    public func load() throws(SystemError) -> (records: [LockoutRecord], damaged: Int) {
        guard let bytes = try POSIX.readFile(path) else { return ([], 0) }
        return Self.decode(String(decoding: bytes, as: UTF8.self), now: POSIX.now().seconds)
    }

    /// Replaces the file (blocking): atomically, durably, mode 0600.
    public func save(_ records: [LockoutRecord]) throws(SystemError) {
        try POSIX.writeAtomically(path, Array(Self.encode(records, now: POSIX.now().seconds).utf8), mode: 0o600)
    }
}

/// Lockouts shared by the nodes serving one store (the PostgreSQL store's `lockouts` table).
public protocol LockoutSharing: Sendable {
    /// Adds lockouts made on this node; where one exists already, the later end wins.
    func publish(_ lockouts: [LockoutRecord]) async throws
    /// Lifts the lockouts of every address in the network, on every node.
    func lift(_ network: CIDR) async throws
    /// Every lockout in force.
    func current() async throws -> [LockoutRecord]
}

/// Looks after the throttle while the server runs: forgets expired failures and
/// wrong-password hashes (``LoginThrottle/sweep()``); with a state file, saves the lockouts on
/// the thread pool at most once a second after they change, and once more at shutdown; with
/// sharing, passes the lockouts made and lifted here to the other nodes and takes theirs, at
/// start and then every second.
public struct LockoutKeeper: Service {
    let throttle: LoginThrottle
    let file: LockoutStateFile?
    let sharing: (any LockoutSharing)?
    let threadPool: NIOThreadPool
    let logger: Logger
    /// The generation last saved (the one loaded at start).
    let saved: UInt64

    public init(throttle: LoginThrottle, file: LockoutStateFile?, sharing: (any LockoutSharing)? = nil, threadPool: NIOThreadPool, logger: Logger) {
        self.throttle = throttle
        self.file = file
        self.sharing = sharing
        self.threadPool = threadPool
        self.logger = logger
        self.saved = throttle.lockoutGeneration
        if sharing != nil { throttle.startSharing() }
    }

    /// One exchange with the other nodes: lifts, then new lockouts, then everybody's.
    /// What could not be passed on is kept for the next try.
    public func share() async throws {
        guard let sharing else { return }
        let (lockouts, lifts) = throttle.takeUnshared()
        do {
            for network in lifts { try await sharing.lift(network) }
            try await sharing.publish(lockouts)
            throttle.replaceLockouts(with: try await sharing.current())
        } catch {
            throttle.returnUnshared(lockouts, lifts: lifts)
            throw error
        }
    }

    /// Reads the state file and puts its lockouts back into the throttle, then writes it
    /// once, so that a file the server cannot replace is an error at start, not a lockout
    /// silently lost later.
    public static func restore(_ throttle: LoginThrottle, from file: LockoutStateFile, threadPool: NIOThreadPool, logger: Logger) async throws {
        let (records, damaged) = try await threadPool.runIfActive { try file.load() }
        throttle.restore(records)
        if damaged > 0 { logger.warning("master: \(file.path): ignored \(damaged) damaged lockout lines") }
        if !records.isEmpty { logger.info("master: \(records.count) lockouts restored from \(file.path)") }
        let current = throttle.lockouts()
        try await threadPool.runIfActive { try file.save(current) }
    }

    public func run() async throws {
        var saved = self.saved
        var failing = false
        func saveIfChanged() async {
            guard let file else { return }
            let generation = throttle.lockoutGeneration
            guard generation != saved else { return }
            let records = throttle.lockouts()
            do {
                try await threadPool.runIfActive { try file.save(records) }
                saved = generation
                if failing { logger.info("master: lockouts saved to \(file.path) again") }
                failing = false
            } catch {
                // Once per spell of failures, not every second.
                if !failing { logger.error("master: cannot save lockouts to \(file.path): \(error)") }
                failing = true
            }
        }
        var sharingFails = false
        func shareLogged() async {
            guard sharing != nil else { return }
            do {
                try await share()
                if sharingFails { logger.info("master: lockouts shared with the other nodes again") }
                sharingFails = false
            } catch {
                if !sharingFails { logger.error("master: cannot share lockouts with the other nodes: \(error)") }
                sharingFails = true
            }
        }
        await shareLogged()
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
            throttle.sweep()
            await shareLogged()
            await saveIfChanged()
        }
        // Graceful shutdown reaches this service after the POP3 server has stopped (it starts
        // first, so it stops last): this pass has every lockout.
        await shareLogged()
        await saveIfChanged()
    }
}
