import Foundation
import NIOConcurrencyHelpers
import Testing

@testable import DurableFiles

@Suite("Signal watch")
struct SignalWatchTests {
    /// A signal the process inherited as ignored is caught all the same, every time it comes.
    @Test func catchesASignalInheritedAsIgnored() async throws {
        signal(SIGUSR2, SIG_IGN)
        let received = NIOLockedValueBox<[Int32]>([])
        let watch = try SignalWatch([SIGUSR2]) { number in received.withLockedValue { $0.append(number) } }
        for expected in 1...2 {
            // One at a time: the kernel merges a standard signal sent again while pending.
            kill(getpid(), SIGUSR2)
            let deadline = Date().addingTimeInterval(5)
            while received.withLockedValue({ $0.count }) < expected && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(received.withLockedValue { $0 } == [SIGUSR2, SIGUSR2])
        withExtendedLifetime(watch) {}
    }
}
