import DurableFiles
import Logging
import NIOPosix
import POP3Server
import ServerKit
import ServiceLifecycle

/// The one way the TLS certificates are read again, whoever asks (SIGHUP, the file watcher):
/// the files are read on the thread pool, new handshakes get the new certificates, sessions
/// already open keep theirs, and the expiry metrics follow. A failure keeps the old ones.
struct CertificateReloader: Sendable {
    let tls: TLSProvider
    let metrics: ServerMetrics
    let threadPool: NIOThreadPool

    /// Throws the reason (unreadable file, key not the certificate's) and changes nothing then.
    func reload() async throws {
        let tls = self.tls
        try await threadPool.runIfActive { try tls.reload() }
        metrics.certificatesLoaded(tls.expiries, now: POSIX.now().seconds)
    }
}

/// Reloads the certificates when their files change on disk, so a renewal needs no SIGHUP
/// (Dovecot needs `doveadm reload` after each one). Every ``CertificateWatch/pollInterval`` it
/// takes the `stat`/`lstat` identity of each certificate and key file on the thread pool (never
/// an event loop); a change that has settled is loaded once; a pair that does not load is
/// logged once and the old certificates keep serving until the files change again.
struct CertificateWatcher: Service {
    let reloader: CertificateReloader
    /// The identities taken before the certificates were first read.
    let initial: CertificateWatch
    let threadPool: NIOThreadPool
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown { await poll() }
    }

    private func poll() async {
        var watch = initial
        let paths = watch.paths
        // The files were first read before privileges were dropped (`run_as`); say now if this
        // user cannot read them, rather than at the first renewal.
        if let (now, unreadable) = try? await threadPool.runIfActive({ (CertificateWatch.snapshot(paths), paths.filter { access($0, R_OK) != 0 }) }) {
            watch.forgetUnreachable(now)
            if !unreadable.isEmpty {
                logger.warning("master: \(unreadable.joined(separator: ", ")) cannot be read by uid \(getuid()): a renewed certificate will not be loaded (nor on SIGHUP) until it can, or Postie restarts")
            }
        }
        logger.debug("master: Watching \(paths.joined(separator: ", ")) for renewed certificates")
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: CertificateWatch.pollInterval)
            } catch {
                return
            }
            guard let snapshot = try? await threadPool.runIfActive({ CertificateWatch.snapshot(paths) }) else { continue }
            guard case .reload(let changed) = watch.observe(snapshot) else { continue }
            let what = changed.joined(separator: ", ")
            do {
                try await reloader.reload()
                logger.info("master: TLS certificates reloaded: \(what) changed")
            } catch {
                logger.error("master: \(what) changed, but kept the old TLS certificates (tried again when the files change): \(error)")
            }
        }
    }
}
