import NIOCore
import NIOEmbedded
import Testing

@testable import ServerKit

@Suite("Login timeout (EmbeddedChannel)")
struct LoginTimeoutTests {
    static let farewell = "-ERR Disconnected: no login within 180 seconds.\r\n"

    func connectedChannel(_ deadline: LoginDeadline) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(LoginTimeoutHandler(timeout: .seconds(180), farewell: Self.farewell, deadline: deadline))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    @Test func inputDoesNotMoveTheDeadline() throws {
        let deadline = LoginDeadline()
        let channel = try connectedChannel(deadline)
        // A byte every few seconds, as a slow-drip client sends: the deadline stays put.
        for _ in 0..<59 {
            channel.embeddedEventLoop.advanceTime(by: .seconds(3))
            try channel.writeInbound(ByteBuffer(string: "C"))
            _ = try channel.readInbound(as: ByteBuffer.self)
        }
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(3))
        let out = try channel.readOutbound(as: ByteBuffer.self)
        #expect(out.map { String(buffer: $0) } == Self.farewell)
        #expect(!channel.isActive)
        #expect(deadline.current == .expired)
        #expect(!deadline.loggedIn())
    }

    @Test func aLoginInTimeKeepsTheConnection() throws {
        let deadline = LoginDeadline()
        let channel = try connectedChannel(deadline)
        channel.embeddedEventLoop.advanceTime(by: .seconds(179))
        #expect(deadline.loggedIn())
        channel.embeddedEventLoop.advanceTime(by: .seconds(3600))
        #expect(channel.isActive)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        #expect(deadline.current == .loggedIn)
        _ = try channel.finish()
    }
}
