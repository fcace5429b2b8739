import DurableFiles
import NIOCore
import POP3Core

/// Spools one message read from a file descriptor to its end (`postie deliver`'s standard
/// input, a file `postie db import` stores): its canonical CRLF form goes into a ``SpoolFile``
/// with the one canonicaliser (``MessageCanonicalizer``), in bounded memory whatever its size,
/// and the result is the ``SpooledMessage`` a ``MailDelivery`` stores. LMTP spools through the
/// same canonicaliser as DATA arrives. Blocking: thread pool only.
public enum MessageIntake {
    public enum Failure: Error, Sendable {
        /// More than `maxSize` canonical octets: reading stopped there.
        case tooBig
        /// Reading the input failed.
        case read(SystemError)
        /// Writing or closing the spool file failed.
        case spool(SystemError)
    }

    static let chunkSize = 256 * 1024

    /// Reads `input` to its end into `spool` and closes the spool file. With
    /// `droppingMboxFromLine`, a leading mbox `From ` line goes (Exim's pipe transport and
    /// procmail add one). `name` names the input in errors.
    public static func spool(
        from input: Int32, name: String, into spool: SpoolFile, maxSize: Int = .max, droppingMboxFromLine: Bool = false
    ) -> Result<SpooledMessage, Failure> {
        var canonicalizer = MessageCanonicalizer(framing: .endOfStream)
        let allocator = ByteBufferAllocator()
        var output = allocator.buffer(capacity: chunkSize + chunkSize / 8)
        var buffer = allocator.buffer(capacity: chunkSize)
        /// Octets read before deciding whether the input starts with a `From ` line.
        var head = allocator.buffer(capacity: 16)
        var decided = !droppingMboxFromLine
        var skippingFromLine = false

        func flush() -> Failure? {
            guard output.readableBytes > 0 else { return nil }
            do { try spool.writeBlocking(output) } catch { return .spool(error) }
            output.clear()
            return nil
        }
        func consume(_ chunk: inout ByteBuffer) -> Failure? {
            if skippingFromLine {
                guard let lf = chunk.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
                chunk.moveReaderIndex(to: lf + 1)
                skippingFromLine = false
            }
            _ = chunk.withUnsafeReadableBytes { canonicalizer.process($0, into: &output) }
            if canonicalizer.size > maxSize { return .tooBig }
            return output.readableBytes >= chunkSize ? flush() : nil
        }

        while true {
            buffer.clear()
            var failure: SystemError?
            let n = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: chunkSize) { pointer -> Int in
                do throws(SystemError) {
                    return try POSIX.read(input, into: pointer, path: name)
                } catch {
                    failure = error
                    return 0
                }
            }
            if let failure { return .failure(.read(failure)) }
            if n == 0 { break }
            if !decided {
                head.writeBuffer(&buffer)
                if head.readableBytes < 5 { continue }
                decided = true
                skippingFromLine = head.readableBytesView.starts(with: "From ".utf8)
                buffer = head
            }
            if let error = consume(&buffer) { return .failure(error) }
        }
        if !decided, head.readableBytes > 0, let error = consume(&head) { return .failure(error) }
        canonicalizer.finish(into: &output)
        if canonicalizer.size > maxSize { return .failure(.tooBig) }
        if let error = flush() { return .failure(error) }
        do { try spool.closeBlocking() } catch { return .failure(.spool(error)) }
        return .success(SpooledMessage(path: spool.path, size: canonicalizer.size, headerSize: canonicalizer.effectiveHeaderSize))
    }
}
