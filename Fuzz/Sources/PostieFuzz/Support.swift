// The harness shared by every target: libFuzzer's entry points, target selection and a
// reader that turns the fuzzer's bytes into choices.

#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// Every fuzz target, by the name `scripts/fuzz` and `POSTIE_FUZZ_TARGET` use.
let targets: [String: (UnsafeRawBufferPointer) -> Void] = [
    "pop3-command": POP3CommandTarget.run,
    "pop3-session": POP3SessionTarget.run,
    "message-transforms": MessageTransformsTarget.run,
    "lmtp": LMTPTarget.run,
    "sasl": SASLTarget.run,
    "proxy-protocol": ProxyProtocolTarget.run,
    "passwords": PasswordsTarget.run,
    "maildir-names": MaildirNamesTarget.run,
    "postie-uidlist": UIDListTarget.run,
    "dovecot-uidlist": DovecotUIDListTarget.run,
    "retention": RetentionTarget.run,
    "fetch-config": FetchConfigTarget.run,
    "mbox": MboxTarget.run,
    "dovecot-sql-config": DovecotSQLConfigTarget.run,
    "dovecot-ldap-config": DovecotLDAPConfigTarget.run,
    "tls-client-hello": TLSClientHelloTarget.run,
]

nonisolated(unsafe) var selectedTarget: ((UnsafeRawBufferPointer) -> Void)?

@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    let name = getenv("POSTIE_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = targets[name] else {
        let names = targets.keys.sorted().joined(separator: " ")
        fputs("set POSTIE_FUZZ_TARGET to one of: \(names)\n", stderr)
        exit(2)
    }
    selectedTarget = target
    return 0
}

// SwiftPM links an executable target with `main` aliased to `<module>_main`, which would hide
// libFuzzer's own `main`; so the module's entry point hands over to libFuzzer's driver.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

@_cdecl("PostieFuzz_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, fuzzerTestOneInput)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selectedTarget!(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// Stops the run with a message when an invariant does not hold: libFuzzer saves the input.
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
    if !condition() {
        fputs("invariant violated at \(file):\(line): \(message())\n", stderr)
        fflush(stderr)
        abort()
    }
}

/// Takes choices off the front of the input; past its end every choice is 0.
struct FuzzReader {
    var bytes: ArraySlice<UInt8>

    init(_ data: UnsafeRawBufferPointer) { bytes = ArraySlice(data) }
    init(_ bytes: [UInt8]) { self.bytes = bytes[...] }

    var isEmpty: Bool { bytes.isEmpty }

    mutating func byte() -> UInt8 { bytes.popFirst() ?? 0 }
    mutating func bool() -> Bool { byte() & 1 == 1 }
    /// A number in `0..<bound` (bound at most 65,536).
    mutating func int(below bound: Int) -> Int {
        guard bound > 1 else { return 0 }
        let value = bound <= 256 ? Int(byte()) : Int(byte()) << 8 | Int(byte())
        return value % bound
    }
    mutating func take(_ count: Int) -> [UInt8] {
        let taken = bytes.prefix(count)
        bytes = bytes.dropFirst(count)
        return Array(taken)
    }
    /// Everything left.
    mutating func rest() -> [UInt8] { take(bytes.count) }
}

/// Chunk sizes for feeding a stream in pieces, so that every state carried across chunks is
/// exercised: derived from one seed byte, 1...`maximum` octets each.
struct ChunkSizes: IteratorProtocol {
    var state: UInt32
    let maximum: Int
    init(seed: UInt8, maximum: Int = 17) {
        state = UInt32(seed) &* 2_654_435_761 | 1
        self.maximum = maximum
    }
    mutating func next() -> Int? {
        state ^= state << 13
        state ^= state >> 17
        state ^= state << 5
        return 1 + Int(state % UInt32(maximum))
    }
}

/// `bytes` cut into pieces by `sizes`.
func chunks(_ bytes: [UInt8], _ sizes: inout ChunkSizes) -> [ArraySlice<UInt8>] {
    var result: [ArraySlice<UInt8>] = []
    var start = 0
    while start < bytes.count {
        let end = min(bytes.count, start + sizes.next()!)
        result.append(bytes[start..<end])
        start = end
    }
    return result
}

/// `bytes` cut into pieces by `sizes`, each handed to `body` in the same ByteBuffer, refilled.
/// One allocation for all the pieces: a new buffer per piece made AddressSanitizer's allocator
/// most of a run of the targets that cut messages into pieces of up to 17 octets.
func forEachChunk(_ bytes: [UInt8], _ sizes: inout ChunkSizes, _ body: (inout ByteBuffer) -> Void) {
    var buffer = ByteBuffer()
    buffer.reserveCapacity(min(bytes.count, sizes.maximum))
    var start = 0
    while start < bytes.count {
        let end = min(bytes.count, start + sizes.next()!)
        buffer.clear()
        buffer.writeBytes(bytes[start..<end])
        body(&buffer)
        start = end
    }
}

/// The lines of a fuzz input: each target that parses line by line takes one line per LF.
func lines(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] {
    bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
}
