import POP3Fetch

/// `postie fetch --config FILE`: the YAML multi-account file (and Yams under it).
///
/// Invariants: parsing never crashes, answers the same twice, and yields at least one account
/// with a positive poll interval when it succeeds.
enum FetchConfigTarget {
    static func run(_ data: UnsafeRawBufferPointer) {
        let text = String(decoding: data, as: UTF8.self)
        let first = try? FetchConfigFile(yaml: text, origin: "fuzz.yaml", readFile: { _ in "secret" })
        guard let first else { return }
        require(!first.accounts.isEmpty, "a config without accounts")
        require(first.poll.map { $0 > 0 } ?? true, "poll \(String(describing: first.poll))")
        let second = try? FetchConfigFile(yaml: text, origin: "fuzz.yaml", readFile: { _ in "secret" })
        require(second?.accounts.count == first.accounts.count && second?.poll == first.poll, "parsing is not deterministic")
    }
}
