import COpenSSLCrypto
import NIOCore
import POP3Server

#if canImport(Glibc)
import Glibc
#endif

/// An open spool file read in fixed-size chunks. Blocking: thread pool only.
final class SpoolFile: @unchecked Sendable {
    // @unchecked: used by one task at a time, each read awaited before the next.
    static let chunkSize = 256 * 1024
    private var fd: Int32

    init(path: String) throws {
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SpoolError(message: "cannot open \(path): \(String(cString: strerror(errno)))") }
    }

    /// Up to ``chunkSize`` bytes; an empty buffer at the end.
    func read(allocator: ByteBufferAllocator) throws -> ByteBuffer {
        var buffer = allocator.buffer(capacity: Self.chunkSize)
        var total = 0
        // Fill the chunk completely (short reads are possible) so chunks are uniform.
        while total < Self.chunkSize {
            let fd = self.fd
            let n = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.chunkSize - total) { pointer -> Int in
                while true {
                    let n = Glibc.read(fd, pointer.baseAddress, Self.chunkSize - total)
                    if n >= 0 { return n }
                    if errno != EINTR { throw SpoolError(message: "read: \(String(cString: strerror(errno)))") }
                }
            }
            if n == 0 { break }
            total += n
        }
        return buffer
    }

    func close() {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }

    deinit { close() }

    /// SHA-256 and length of a whole file, read in chunks.
    static func digest(path: String) throws -> (sha256: [UInt8], size: Int) {
        let file = try SpoolFile(path: path)
        defer { file.close() }
        let hasher = SHA256Hasher()
        var size = 0
        let allocator = ByteBufferAllocator()
        while true {
            let chunk = try file.read(allocator: allocator)
            if chunk.readableBytes == 0 { break }
            size += chunk.readableBytes
            chunk.withUnsafeReadableBytes { hasher.update($0) }
        }
        return (hasher.finish(), size)
    }
}

struct SpoolError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// Incremental SHA-256 on libcrypto, for content addressing of bodies.
final class SHA256Hasher {
    private let context: OpaquePointer

    init() {
        context = EVP_MD_CTX_new()
        precondition(EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1, "OpenSSL SHA-256 init failed")
    }

    func update(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        precondition(EVP_DigestUpdate(context, bytes.baseAddress, bytes.count) == 1, "OpenSSL SHA-256 update failed")
    }

    /// The digest; call once.
    func finish() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        precondition(EVP_DigestFinal_ex(context, &out, &length) == 1 && length == 32, "OpenSSL SHA-256 final failed")
        return Array(out.prefix(32))
    }

    deinit { EVP_MD_CTX_free(context) }
}
