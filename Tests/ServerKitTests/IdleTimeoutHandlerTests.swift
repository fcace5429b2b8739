import NIOCore
import NIOEmbedded
import Testing

@testable import ServerKit

@Suite("Idle timeout (EmbeddedChannel)")
struct IdleTimeoutTests {
    @Test func closesIdleConnectionWithReason() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(IdleTimeoutHandler(timeout: .seconds(600), farewell: "-ERR Disconnected for inactivity.\r\n"))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        channel.embeddedEventLoop.advanceTime(by: .seconds(599))
        #expect(channel.isActive)
        try channel.writeInbound(ByteBuffer(string: "NOOP\r\n"))  // activity resets the clock
        channel.embeddedEventLoop.advanceTime(by: .seconds(599))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        let out = try channel.readOutbound(as: ByteBuffer.self)
        #expect(out.map { String(buffer: $0) } == "-ERR Disconnected for inactivity.\r\n")
        #expect(!channel.isActive)
    }
}
