extension StringProtocol where UTF8View: BidirectionalCollection {
    /// The text without the spaces and tabs that begin and end it: how the Dovecot config
    /// files Postie reads trim a setting's key and value, and a quota rule.
    ///
    /// Works on the UTF-8 octets: a blank is one octet, so the cut always falls between
    /// Unicode scalars, and a value of any length costs one scan from each end and one copy.
    package var trimmingBlanks: String {
        let octets = utf8
        let isBlank = { (octet: UInt8) in octet == UInt8(ascii: " ") || octet == UInt8(ascii: "\t") }
        guard let first = octets.firstIndex(where: { !isBlank($0) }),
              let last = octets.lastIndex(where: { !isBlank($0) }) else { return "" }
        return String(decoding: octets[first...last], as: UTF8.self)
    }
}
