import Logging
import PostgresNIO

/// Brute-force lockouts shared by every node on this database (table `lockouts`). Times are
/// the database's clock, so nodes whose clocks differ still agree on when a lockout ends.
extension PostgresStore {
    /// One lockout: an address, the milliseconds left and the failures that locked it.
    public typealias SharedLockout = (address: String, milliseconds: Int64, failures: Int)

    /// Adds lockouts made on this node; where the address is locked already the later end wins.
    public func publishLockouts(_ lockouts: [SharedLockout]) async throws {
        guard !lockouts.isEmpty else { return }
        let logger = self.logger
        try await leased("lockouts") { connection in
            for lockout in lockouts {
                try await connection.query("""
                    INSERT INTO lockouts (address, until, failures)
                    VALUES (\(lockout.address)::inet, now() + \(lockout.milliseconds) * interval '1 millisecond', \(lockout.failures))
                    ON CONFLICT (address) DO UPDATE
                    SET until = GREATEST(lockouts.until, EXCLUDED.until), failures = EXCLUDED.failures
                    """, logger: logger)
            }
        }
    }

    /// Lifts the lockouts of every address in a network (`192.0.2.7/32`, `2001:db8::/48`);
    /// returns the addresses. An IPv4 network also lifts its IPv4-mapped form (`::ffff:192.0.2.7`,
    /// as a node listening on `[::]` sees IPv4 clients): `<<=` never matches across families.
    @discardableResult
    public func liftLockouts(in network: String) async throws -> [String] {
        let logger = self.logger
        return try await leased("lockouts") { connection in
            var lifted: [String] = []
            let rows = try await connection.query("""
                DELETE FROM lockouts WHERE address <<= \(network)::cidr
                   OR (family(\(network)::cidr) = 4
                       AND address <<= ('::ffff:' || host(\(network)::cidr) || '/' || (96 + masklen(\(network)::cidr)))::cidr)
                RETURNING host(address)
                """, logger: logger)
            for try await address in rows.decode(String.self) { lifted.append(address) }
            return lifted
        }
    }

    /// The lockouts in force; expired rows are deleted on the way.
    public func currentLockouts() async throws -> [SharedLockout] {
        let logger = self.logger
        return try await leased("lockouts") { connection in
            try await connection.query("DELETE FROM lockouts WHERE until <= now()", logger: logger)
            let rows = try await connection.query("""
                SELECT host(address), (EXTRACT(EPOCH FROM until - now()) * 1000)::bigint, failures
                FROM lockouts WHERE until > now() ORDER BY address
                """, logger: logger)
            var lockouts: [SharedLockout] = []
            for try await (address, milliseconds, failures) in rows.decode((String, Int64, Int32).self) {
                lockouts.append((address, milliseconds, Int(failures)))
            }
            return lockouts
        }
    }
}
