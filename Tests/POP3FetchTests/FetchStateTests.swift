import Testing

@testable import POP3Client
@testable import POP3Fetch

@Suite struct FetchStateTests {
    @Test func roundTripsEveryRecord() throws {
        var state = FetchState()
        state.entries["a1"] = .init(time: 100, size: 42, location: "1.M1P1Q1.host,S=40,W=42,PF=00000000-a1")
        state.entries["k!"] = .init(time: 200, size: nil, location: nil)
        state.pending["p"] = "tmpname"
        let text = state.serialized()
        #expect(text.hasPrefix(FetchState.header + "\n"))
        let parsed = try FetchState(parsing: Substring(text))
        #expect(parsed == state)
    }

    @Test func journalRecordsApplyInOrder() throws {
        let text = """
            postie-fetch-state 1
            P u1 loc1
            S u1 10 5 loc1
            P u2 loc2
            K u3 11
            S u4 12 7 loc4
            G u4

            """
        let state = try FetchState(parsing: Substring(text.replacingOccurrences(of: "\n\n", with: "\n")))
        #expect(state.entries["u1"] == .init(time: 10, size: 5, location: "loc1"))
        #expect(state.pending == ["u2": "loc2"])
        #expect(state.entries["u3"]?.isMarkedOnly == true)
        #expect(state.entries["u4"] == nil)
    }

    @Test func tornLastLineIsIgnored() throws {
        let text = "postie-fetch-state 1\nS u1 10 5 loc1\nS u2 1"
        let state = try FetchState(parsing: Substring(text))
        #expect(state.entries.keys.sorted() == ["u1"])
        // A torn header alone: nothing was recorded.
        #expect(try FetchState(parsing: "postie-fe").entries.isEmpty)
        #expect(try FetchState(parsing: "").entries.isEmpty)
    }

    @Test(arguments: [
        "not a state\n",
        "postie-fetch-state 1\nX u 1\n",
        "postie-fetch-state 1\nS u 10 loc\n",
        "postie-fetch-state 1\nS u ten 5 loc\n",
        "postie-fetch-state 1\nP u\n",
        "postie-fetch-state 1\nK u\n",
        "postie-fetch-state 1\nG\n",
    ])
    func corruptLinesAreRefused(_ text: String) {
        #expect(throws: FetchState.CorruptError.self) { try FetchState(parsing: Substring(text)) }
    }

    @Test func uidlValidityFollowsRFC1939() {
        #expect(FetchState.isValidUIDL("00000001a5f3c01"))
        #expect(FetchState.isValidUIDL(String(repeating: "x", count: 70)))
        #expect(!FetchState.isValidUIDL(String(repeating: "x", count: 71)))
        #expect(!FetchState.isValidUIDL(""))
        #expect(!FetchState.isValidUIDL("a b"))
        #expect(!FetchState.isValidUIDL("caf\u{e9}"))
    }

    @Test func namingEscapesRoundTrip() {
        for uidl in ["simple", "with/slash:colon,comma.dot", "%41", "~!{}", "a-b_c"] {
            let escaped = MessageNaming.escape(uidl)
            #expect(!escaped.contains("/") && !escaped.contains(":") && !escaped.contains(",") && !escaped.contains("."))
            #expect(MessageNaming.unescape(Substring(escaped)) == uidl)
        }
        #expect(MessageNaming.unescape("%4") == nil)
        #expect(MessageNaming.tag(for: "a@b:110") != MessageNaming.tag(for: "a@b:995"))
        #expect(MessageNaming.tag(for: "a@b:110").count == 8)
    }

    @Test func lineEnds() {
        let message = Array("A: b\r\n\r\nline\r\nlone\rcr\r\n".utf8)
        let unix = MessageNaming.unixLineEnds(message)
        #expect(unix == Array("A: b\n\nline\nlone\rcr\n".utf8))
        #expect(MessageNaming.crlfSize(ofUnix: unix) == message.count)
    }
}

@Suite struct DeletePolicyTests {
    func account(keep: Bool, after: Int? = nil, larger: Int? = nil) -> FetchAccount {
        var account = FetchAccount(server: .init(host: "h", port: 110, tls: POP3Client.TLSMode.none), user: "u", password: "p",
                                   destination: .maildir("/x"))
        account.keep = keep
        account.deleteAfterDays = after
        account.deleteLarger = larger
        return account
    }

    let stored = FetchState.Entry(time: 1_000_000, size: 10, location: "loc")
    let marked = FetchState.Entry(time: 1_000_000, size: nil, location: nil)

    @Test func withoutKeepStoredMessagesGo() {
        #expect(Fetcher.shouldDelete(stored, size: 10, account: account(keep: false), now: 1_000_001))
    }

    @Test func markedMessagesHaveNoLocalCopyAndStay() {
        #expect(!Fetcher.shouldDelete(marked, size: 10, account: account(keep: false), now: 1_000_001))
        #expect(!Fetcher.shouldDelete(marked, size: 10, account: account(keep: true, larger: 1), now: 1_000_001))
        #expect(Fetcher.shouldDelete(marked, size: 10, account: account(keep: true, after: 1), now: 1_000_000 + 86_400))
    }

    @Test func keepWithAgeAndSize() {
        let day = Int64(86_400)
        #expect(!Fetcher.shouldDelete(stored, size: 10, account: account(keep: true), now: 1_000_000 + 100 * day))
        #expect(!Fetcher.shouldDelete(stored, size: 10, account: account(keep: true, after: 3), now: 1_000_000 + 2 * day))
        #expect(Fetcher.shouldDelete(stored, size: 10, account: account(keep: true, after: 3), now: 1_000_000 + 3 * day))
        #expect(Fetcher.shouldDelete(stored, size: 11, account: account(keep: true, larger: 10), now: 1_000_000))
        #expect(!Fetcher.shouldDelete(stored, size: 10, account: account(keep: true, larger: 10), now: 1_000_000))
    }

    @Test func parsesSizes() {
        #expect(parseSize("10M") == 10 * 1024 * 1024)
        #expect(parseSize("512k") == 512 * 1024)
        #expect(parseSize("100") == 100)
        #expect(parseSize("x") == nil)
        // Found by the fetch-config fuzz target: the multiplication overflowed and trapped.
        #expect(parseSize("6148914691236517202M") == nil)
        #expect(parseSize("8589934591G") == 8_589_934_591 * 1024 * 1024 * 1024)
        #expect(parseSize("8589934592G") == nil)
    }
}

@Suite struct UIDLJoinTests {
    func uids(_ list: [(Int, String)]) -> [POP3Client.MessageUID] { list.map { .init(number: $0.0, uid: $0.1) } }
    func sizes(_ numbers: ClosedRange<Int>) -> [POP3Client.MessageSize] { numbers.map { .init(number: $0, size: $0 * 10) } }

    @Test func aHealthyListingIsCompleteAndOrdered() {
        var result = FetchResult(account: "a", destination: "d")
        let joined = Fetcher.join(uids: uids([(2, "b"), (1, "a"), (3, "c")]), sizes: sizes(1...3), result: &result)
        #expect(joined.messages.map(\.uidl) == ["a", "b", "c"])
        #expect(joined.messages.map(\.size) == [10, 20, 30])
        #expect(joined.onServer == ["a", "b", "c"])
        #expect(result.failed == 0 && result.warnings.isEmpty && result.status == .ok)
    }

    @Test func duplicateMissingAndInvalidUIDLsAreLeftAlone() {
        var result = FetchResult(account: "a", destination: "d")
        let joined = Fetcher.join(
            uids: uids([(1, "a"), (2, "dup"), (3, "dup"), (5, "has space"), (6, "f")]), sizes: sizes(1...6), result: &result)
        #expect(joined.messages.map(\.number) == [1, 6])
        #expect(joined.onServer == nil)
        #expect(result.failed == 4)
        #expect(result.failures.map(\.number) == [2, 3, 4, 5])
        #expect(result.failures.map(\.reason) == ["duplicate UIDL", "duplicate UIDL", "no UIDL", "invalid UIDL"])
        #expect(result.warnings.count == 3)
        #expect(result.warnings[0].contains("messages 2, 3 the same UIDL dup"))
        #expect(result.status == .partial)
    }
}
