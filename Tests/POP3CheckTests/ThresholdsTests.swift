import Testing

@testable import POP3Check

@Suite struct ThresholdsTests {
    @Test func placeholder() {}
}
