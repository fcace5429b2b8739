import COpenSSLCrypto
import DurableFiles
import MailBackend
import NIOCore

extension SpoolFile.Reader {
    /// SHA-256 and length of a whole file, read in chunks.
    static func digest(path: String) throws -> (sha256: [UInt8], size: Int) {
        let file = try SpoolFile.Reader(path: path)
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
