import Histogram

/// The steps of a benchmark session, each timed on its own.
public enum BenchStep: Int, CaseIterable, Sendable, Codable {
    /// TCP connect and the greeting (and the TLS handshake with implicit TLS).
    case connect
    /// `STLS` and the TLS handshake after it (RFC 2595).
    case stls
    /// `USER` and `PASS` together.
    case login
    case stat
    case uidl
    /// One `RETR`, the whole message read.
    case retr
    case dele
    case quit

    public var name: String {
        switch self {
        case .connect: "connect"
        case .stls: "stls"
        case .login: "login"
        case .stat: "stat"
        case .uidl: "uidl"
        case .retr: "retr"
        case .dele: "dele"
        case .quit: "quit"
        }
    }
}

/// Latency percentiles of one histogram, in milliseconds.
public struct LatencySummary: Sendable, Codable, Equatable {
    public var count: UInt64
    public var p50: Double
    public var p95: Double
    public var p99: Double
    public var max: Double
    public var mean: Double
}

/// HdrHistogram of latencies in microseconds: 1 µs to 1 hour at three significant digits, so
/// every percentile is within 0.1% of the value recorded (HdrHistogram's guarantee).
public struct LatencyHistogram: Sendable {
    public private(set) var histogram = Histogram<UInt64>(
        lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)

    public init() {}

    /// Records a latency in nanoseconds (clamped to the trackable range).
    public mutating func record(nanoseconds: UInt64) {
        let micros = Swift.max(1, Swift.min(nanoseconds / 1000, histogram.highestTrackableValue))
        _ = histogram.record(micros)
    }

    public mutating func merge(_ other: LatencyHistogram) {
        histogram.add(other.histogram)
    }

    public var count: UInt64 { histogram.totalCount }

    /// p50, p95, p99, max and mean in milliseconds; zeros when nothing was recorded.
    public var summary: LatencySummary {
        guard histogram.totalCount > 0 else { return LatencySummary(count: 0, p50: 0, p95: 0, p99: 0, max: 0, mean: 0) }
        func ms(_ micros: UInt64) -> Double { Double(micros) / 1000 }
        return LatencySummary(
            count: histogram.totalCount,
            p50: ms(histogram.valueAtPercentile(50)),
            p95: ms(histogram.valueAtPercentile(95)),
            p99: ms(histogram.valueAtPercentile(99)),
            max: ms(histogram.max),
            mean: histogram.mean / 1000)
    }
}
