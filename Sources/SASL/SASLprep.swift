import Foundation

/// SASLprep (RFC 4013), the string preparation SCRAM applies to passwords (RFC 5802
/// section 2.2): non-ASCII spaces become SPACE, characters "commonly mapped to nothing" are
/// removed, then NFKC. Prohibited-character checks are left out: a password that contains
/// them simply does not match.
public enum SASLprep {
    /// RFC 3454 table C.1.2.
    static let nonASCIISpaces: Set<UInt32> = [
        0x00A0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008,
        0x2009, 0x200A, 0x202F, 0x205F, 0x3000,
    ]
    /// RFC 3454 table B.1.
    static let mappedToNothing: Set<UInt32> = [
        0x00AD, 0x034F, 0x1806, 0x180B, 0x180C, 0x180D, 0x200B, 0x200C, 0x200D, 0x2060,
        0xFE00, 0xFE01, 0xFE02, 0xFE03, 0xFE04, 0xFE05, 0xFE06, 0xFE07, 0xFE08, 0xFE09,
        0xFE0A, 0xFE0B, 0xFE0C, 0xFE0D, 0xFE0E, 0xFE0F, 0xFEFF,
    ]

    public static func prepare(_ text: String) -> String {
        if text.utf8.allSatisfy({ $0 < 0x80 }) { return text }  // ASCII is unchanged
        var scalars = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if nonASCIISpaces.contains(scalar.value) {
                scalars.append(" ")
            } else if !mappedToNothing.contains(scalar.value) {
                scalars.append(scalar)
            }
        }
        return String(scalars).precomposedStringWithCompatibilityMapping
    }
}
