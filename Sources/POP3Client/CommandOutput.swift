import DurableFiles

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Text a client command (`check`, `fetch`, `bench`, `migrate`) writes, and the stream it goes
/// to. The libraries compose it; the `postie` command only writes it out.
public enum CommandOutput: Sendable, Hashable {
    case standardOutput(String)
    case standardError(String)

    /// Writes the text to its stream.
    public func write() {
        switch self {
        case .standardOutput(let text): FileHandleOutput.standardOutput(text)
        case .standardError(let text): FileHandleOutput.standardError(text)
        }
    }
}

/// A mistake on the command line found while turning the flags into a run (a bad `HOST:PORT`,
/// an unreadable password file): the command shows it with its usage, as ArgumentParser does
/// for its own checks (exit status 64).
public struct UsageError: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The `--json` documents of `fetch` and `bench`: pretty-printed, keys sorted and in snake case,
/// slashes unescaped, and a final line end.
public enum CommandJSON {
    public static func document(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return String(decoding: try encoder.encode(value), as: UTF8.self) + "\n"
    }
}
