import Dispatch

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The write end of the self-pipe the signal handler writes to; set once, before any handler
/// is installed, and only read afterwards (from the handler).
nonisolated(unsafe) private var signalPipeWriteEnd: Int32 = -1

/// Catches termination signals for a command-line tool that must stop cleanly (`postie fetch`).
///
/// It installs a handler of its own with `sigaction`, whatever disposition the process
/// inherited: a shell script that ran `trap '' INT`, or `nohup`, starts its children with the
/// signal ignored, and a tool that only watched for the signal would then never see Ctrl-C.
/// The handler does the one async-signal-safe thing, writing the signal's number to a pipe;
/// `onSignal` runs on a dispatch queue for each signal received, in order, for as long as the
/// watch is kept. Start one per process.
public final class SignalWatch {
    private let source: any DispatchSourceRead

    public init(_ signals: [Int32], onSignal: @escaping @Sendable (Int32) -> Void) throws(SystemError) {
        var ends: [Int32] = [-1, -1]
        try POSIX.check(pipe(&ends), "pipe", "signal pipe")
        for end in ends {
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
            // The handler must never block; the reader drains until EAGAIN.
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
        }
        let readEnd = ends[0]
        signalPipeWriteEnd = ends[1]
        source = DispatchSource.makeReadSource(fileDescriptor: readEnd, queue: DispatchQueue(label: "postie.signals"))
        source.setEventHandler {
            var number: UInt8 = 0
            while read(readEnd, &number, 1) == 1 { onSignal(Int32(number)) }
        }
        source.resume()
        for signal in signals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { number in
                let saved = errno
                var byte = UInt8(truncatingIfNeeded: number)
                _ = write(signalPipeWriteEnd, &byte, 1)
                errno = saved
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            try POSIX.check(sigaction(signal, &action, nil), "sigaction", "signal \(signal)")
            // A signal blocked by the parent would never arrive either.
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, signal)
            pthread_sigmask(SIG_UNBLOCK, &set, nil)
        }
    }

    deinit { source.cancel() }
}
