import DurableFiles

/// Decides when certificate and key files that changed on disk are loaded again, so that a
/// renewal (certbot, acme.sh, a deploy script) needs no SIGHUP.
///
/// The caller polls ``FileIdentity`` of every file about once a second and passes the result
/// to ``observe(_:)``. A change is loaded once the files have stayed the same for one more
/// poll: a certificate and its key are renamed into place one after the other, and loading
/// between the two would pair the new certificate with the old key. Each state of the files
/// is tried at most once, so a pair that does not load (wrong key, a half-written file) is
/// reported once, and tried again only when a file changes again. Pure: no I/O, no clock.
public struct CertificateWatch: Sendable {
    /// The identity of each watched file, in the order of ``paths``; nil where it is missing.
    public typealias Snapshot = [FileIdentity?]

    /// How often the files are looked at. A change is loaded one or two polls after it happens.
    public static let pollInterval: Duration = .seconds(1)

    /// The files watched: every `--tls-cert`, `--tls-key` and `--tls-sni` file, once each.
    public let paths: [String]
    /// The files as they were when the certificates now served (or last tried) were read.
    public private(set) var loaded: Snapshot
    /// A new state seen once, waiting to be seen again unchanged.
    public private(set) var pending: Snapshot?

    public enum Decision: Equatable, Sendable {
        /// Nothing changed since the last load.
        case unchanged
        /// Files changed; wait for them to settle.
        case settling
        /// Load now: these paths differ from the last load.
        case reload(changed: [String])
    }

    /// `loaded`: the files' identities taken just before the certificates were first read (a
    /// change between that look and the read is then loaded once more, never missed).
    public init(paths: [String], loaded: Snapshot) {
        precondition(paths.count == loaded.count, "one identity per path")
        self.paths = paths
        self.loaded = loaded
    }

    /// Every certificate and key file of `settings`, each once, in order.
    public static func paths(of settings: TLSSettings) -> [String] {
        var seen = Set<String>()
        return settings.certificates.flatMap { [$0.certificatePath, $0.keyPath] }.filter { seen.insert($0).inserted }
    }

    /// The identities of `paths` now. Blocking (`stat`, `lstat`): call it on a thread pool.
    public static func snapshot(_ paths: [String]) -> Snapshot {
        paths.map { FileIdentity.of($0) }
    }

    /// Files that can no longer be seen at all (privileges dropped to a user who cannot enter
    /// their directory) count as missing from the start, so that losing sight of them is not
    /// taken for a change; should they become visible, that is one.
    public mutating func forgetUnreachable(_ snapshot: Snapshot) {
        precondition(snapshot.count == paths.count, "one identity per path")
        for index in paths.indices where snapshot[index] == nil { loaded[index] = nil }
    }

    /// Takes one poll's identities and says whether to load the certificates now. After
    /// `.reload` the new state counts as loaded, whether or not the load succeeds.
    public mutating func observe(_ snapshot: Snapshot) -> Decision {
        precondition(snapshot.count == paths.count, "one identity per path")
        if snapshot == loaded {
            pending = nil
            return .unchanged
        }
        guard snapshot == pending else {
            pending = snapshot
            return .settling
        }
        let changed = paths.indices.filter { snapshot[$0] != loaded[$0] }.map { paths[$0] }
        loaded = snapshot
        pending = nil
        return .reload(changed: changed)
    }
}
