import DurableFiles

#if canImport(Glibc)
import Glibc
#endif

/// Delivery into a Maildir (`DIR/tmp`, `DIR/new`, `DIR/cur`), the way a delivery agent does it:
/// the file is written and fsynced in `tmp/`, renamed into `new/`, and `new/` is fsynced.
///
/// Each name carries the account's tag and the message's UIDL, so that a lost state file can be
/// rebuilt from the Maildir (``scan()``) and an interrupted delivery found again:
///
///     1764240000.M123456P4242Q3.host,S=2210,W=2262,PF=1a2b3c4d-000000017a5f3c01
///
/// Mail readers keep the part before `:2,` when they move mail to `cur/` or set flags.
struct MaildirDestination: LocalDestination {
    let root: String
    let tag: String

    init(root: String, account: String) {
        self.root = root.hasSuffix("/") && root.count > 1 ? String(root.dropLast()) : root
        tag = MessageNaming.tag(for: account)
    }

    func prepare() throws(LocalError) {
        try FS.makeDirectory(root)
        for sub in ["tmp", "new", "cur"] { try FS.makeDirectory(root + "/" + sub) }
    }

    func defaultStatePath(account: String) -> String {
        root + "/postie-fetch-" + MessageNaming.escape(account) + ".state"
    }

    /// A unique name (time, microseconds, pid, a per-process sequence number, host).
    private func name(uidl: String, size: Int, crlfSize: Int) -> String {
        MaildirFile.uniqueName() + ",S=\(size),W=\(crlfSize),PF=\(tag)-\(MessageNaming.escape(uidl))"
    }

    func stage(uidl: String, message: [UInt8]) throws(LocalError) -> StagedMessage {
        let bytes = MessageNaming.unixLineEnds(message)
        let name = name(uidl: uidl, size: bytes.count, crlfSize: MessageNaming.crlfSize(ofUnix: bytes))
        let path = root + "/tmp/" + name
        do throws(SystemError) {
            try MaildirFile.create(path) { fd throws(SystemError) in try POSIX.writeAll(fd, bytes, path: path) }
        } catch {
            throw LocalError(error)
        }
        return StagedMessage(uidl: uidl, location: name, storedSize: bytes.count, temporaryPath: path)
    }

    func commit(_ staged: StagedMessage) throws(LocalError) {
        do throws(SystemError) {
            try MaildirFile.publish(root + "/tmp/" + staged.location, as: root + "/new/" + staged.location)
        } catch {
            throw LocalError(error)
        }
    }

    func abandon(_ staged: StagedMessage) {
        if let path = staged.temporaryPath { FS.unlink(path) }
    }

    func settle(uidl: String, location: String) throws(LocalError) -> Settlement {
        guard !location.contains("/"), location.contains(",PF=\(tag)-") else {
            return .absentWithWarning("the state file names \"\(location)\", which is not a file postie delivered for this account")
        }
        if FS.exists(root + "/new/" + location) { return .stored }
        for name in try FS.list(root + "/cur") where name == location || name.hasPrefix(location + ":") {
            return .stored
        }
        if FS.exists(root + "/tmp/" + location) {
            // The file was fsynced before its intent was recorded: finish the delivery.
            try commit(StagedMessage(uidl: uidl, location: location, storedSize: 0))
            return .stored
        }
        return .absent
    }

    func scan() throws(LocalError) -> [String: String] {
        var found: [String: String] = [:]
        let marker = ",PF=\(tag)-"
        for sub in ["new", "cur"] {
            for name in try FS.list(root + "/" + sub) {
                guard let range = name.range(of: marker) else { continue }
                var word = name[range.upperBound...]
                if let end = word.firstIndex(where: { $0 == "," || $0 == ":" }) { word = word[..<end] }
                if let uidl = MessageNaming.unescape(word) {
                    found[uidl] = String(name.split(separator: ":", maxSplits: 1)[0])
                }
            }
        }
        return found
    }

    /// Removes `tmp/` files this account staged but never recorded (a crash before the intent).
    func removeOrphans(keeping: Set<String>) {
        let marker = ",PF=\(tag)-"
        guard let names = try? FS.list(root + "/tmp") else { return }
        for name in names where name.contains(marker) && !keeping.contains(name) {
            FS.unlink(root + "/tmp/" + name)
        }
    }
}
