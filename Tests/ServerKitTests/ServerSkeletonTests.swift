import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import Testing

@testable import ServerKit

/// A session run by its pipeline: greets, is tracked while open.
private final class Greeter: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let skeleton: ServerSkeleton<Never>
    init(_ skeleton: ServerSkeleton<Never>) { self.skeleton = skeleton }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(NIOAny(ByteBuffer(string: "hello\r\n")), promise: nil)
        skeleton.track(context.channel)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        skeleton.untrack(context.channel)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Graceful shutdown closes the input: this session then ends.
        if let event = event as? ChannelEvent, event == .inputClosed { context.close(promise: nil) }
        context.fireUserInboundEventTriggered(event)
    }
}

private struct NoTasks: ConnectionHandler {
    func handle(_ connection: Never, listener: Listener) async {}
    func shutdownBegins() {}
}

/// Collects what the server sends.
private final class Collector: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let received = NIOLockedValueBox("")
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        received.withLockedValue { $0 += String(buffer: buffer) }
    }
}

@Suite("Server skeleton")
struct ServerSkeletonTests {
    @Test func sessionIDsAre16CharactersOfTheBase64Alphabet() {
        let alphabet = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        var seen = Set<String>()
        for _ in 0..<1000 {
            let id = SessionID.make()
            #expect(id.count == 16)
            #expect(id.allSatisfy(alphabet.contains))
            seen.insert(id)
        }
        #expect(seen.count == 1000)
        // Every character position draws from the whole alphabet.
        var generator = CountingGenerator()
        let ids = (0..<64).map { _ in SessionID.make(using: &generator) }
        for position in 0..<16 {
            #expect(Set(ids.map { Array($0)[position] }).count == 64)
        }
    }

    /// Each draw puts k (1...64 in turn) in every 6-bit group, so each position sees every value.
    struct CountingGenerator: RandomNumberGenerator {
        var k: UInt64 = 0
        var half = false
        mutating func next() -> UInt64 {
            defer { half.toggle(); if !half { k += 1 } }
            var value: UInt64 = 0
            for group in 0..<10 { value |= (k % 64) << (6 * UInt64(group)) }
            return value
        }
    }

    @Test func sessionListenersAcceptOnlyOnceServedAndShutdownWaitsForTheirSessions() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let skeleton = ServerSkeleton<Never>(group: group)
        let initialized = NIOLockedValueBox(0)
        let bound = try await skeleton.bindSessions(Listener(host: "127.0.0.1", port: 0), backlog: 16) { channel in
            initialized.withLockedValue { $0 += 1 }
            return channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Greeter(skeleton)) }
        }
        let port = try #require(bound.localAddress?.port)
        let collector = Collector()
        let client = try await ClientBootstrap(group: group)
            .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) } }
            .connect(host: "127.0.0.1", port: port).get()
        // The kernel completed the connection (backlog), but nothing is accepted before serve:
        // a caller binds, drops privileges, then serves.
        try await Task.sleep(for: .milliseconds(100))
        #expect(initialized.withLockedValue { $0 } == 0)

        let serviceGroup = ServiceGroup(
            services: [SkeletonService(skeleton: skeleton, bound: [bound])],
            gracefulShutdownSignals: [], logger: .init(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await serviceGroup.run() }
            while collector.received.withLockedValue({ $0 }) != "hello\r\n" { try await Task.sleep(for: .milliseconds(10)) }
            #expect(initialized.withLockedValue { $0 } == 1)
            await serviceGroup.triggerGracefulShutdown()
            try await tasks.next()
        }
        // The session saw its input closed and ended; serve returned only after it.
        #expect(skeleton.connections.withLockedValue { $0.open.isEmpty })
        try? await client.closeFuture.get()
    }
}

extension ServerSkeletonTests {
    @Test func aConnectionTrackedAfterShutdownBeganHasItsInputClosed() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let skeleton = ServerSkeleton<Never>(group: group)
        let bound = try await skeleton.bindSessions(Listener(host: "127.0.0.1", port: 0), backlog: 16) { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Greeter(skeleton)) }
        }
        let port = try #require(bound.localAddress?.port)
        let serving = Task { try await skeleton.serve([bound], handler: NoTasks()) }
        // As if shutdown had begun after this connection was accepted but before it was tracked.
        skeleton.connections.withLockedValue { $0.shuttingDown = true }
        let collector = Collector()
        let client = try await ClientBootstrap(group: group)
            .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) } }
            .connect(host: "127.0.0.1", port: port).get()
        // The session saw its input closed and ended by itself, without the client doing anything
        // (a guard ends the wait if it never does).
        let gaveUp = NIOLockedValueBox(false)
        let guardTimer = client.eventLoop.scheduleTask(in: .seconds(20)) {
            gaveUp.withLockedValue { $0 = true }
            client.close(promise: nil)
        }
        try await client.closeFuture.get()
        guardTimer.cancel()
        #expect(!gaveUp.withLockedValue { $0 })
        #expect(collector.received.withLockedValue { $0 } == "hello\r\n")
        serving.cancel()
        _ = try? await serving.value
    }
}

private struct SkeletonService: Service {
    let skeleton: ServerSkeleton<Never>
    let bound: [ServerSkeleton<Never>.Bound]
    func run() async throws { try await skeleton.serve(bound, handler: NoTasks()) }
}
