import POP3Client

/// The accounts one `postie fetch` fetches, all at once, and how often.
public struct FetchPlan: Sendable {
    public var accounts: [FetchAccount]
    /// Fetch again every this many seconds until cancelled; nil fetches once.
    public var poll: Int?

    public init(accounts: [FetchAccount], poll: Int?) {
        self.accounts = accounts
        self.poll = poll
    }

    /// The plan from `postie fetch`'s flags as typed: the accounts of the `config` file (its
    /// `poll` unless `poll` is given), or the one account of the other flags, reading its
    /// password (`passwordFile` or `POSTIE_PASSWORD` in `environment`). `to` is `maildir:DIR`
    /// or `mbox:FILE`, `deleteLarger` a size like `20M`, `timeout` the seconds to wait for the
    /// server at each step.
    public init(server: String? = nil, tls: POP3Client.TLSMode? = nil, caFile: String? = nil, user: String? = nil,
                passwordFile: String? = nil, loginMethod: String? = nil, to: String? = nil, keep: Bool = false,
                deleteAfter: Int? = nil, deleteLarger: String? = nil, markExisting: Bool = false, rebuildState: Bool = false,
                stateFile: String? = nil, config: String? = nil, poll: Int? = nil, timeout: Int = 60,
                environment: [String: String] = ClientPassword.processEnvironment) throws(UsageError) {
        if let config {
            let file: FetchConfigFile
            do {
                file = try FetchConfigFile(path: config)
            } catch {
                throw UsageError("\(error)")
            }
            self.init(accounts: file.accounts, poll: poll ?? file.poll)
            return
        }
        guard let server, let parsed = POP3Client.Configuration.parseHostAndPort(server, defaultPort: 110) else {
            throw UsageError("--server: expected HOST:PORT")
        }
        guard let user else { throw UsageError("--user is required") }
        guard let to, let destination = DestinationSpec(parsing: to) else {
            throw UsageError("--to: expected maildir:DIR or mbox:FILE")
        }
        let password: String
        do {
            password = try ClientPassword.read(file: passwordFile, environment: environment)
        } catch {
            throw UsageError(error.description)
        }
        var account = FetchAccount(
            server: POP3Client.Configuration(host: parsed.host, port: parsed.port, tls: tls, trust: .init(caFile: caFile),
                                             timeout: .seconds(Int64(timeout))),
            user: user, password: password, destination: destination)
        if let loginMethod {
            guard let method = LoginMethod(argument: loginMethod) else {
                throw UsageError("--login-method: one of \(LoginMethod.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            account.server.loginMethod = method
        }
        account.keep = keep
        account.deleteAfterDays = deleteAfter
        if let deleteLarger {
            guard let octets = parseSize(deleteLarger) else { throw UsageError("--delete-larger: a size like 20M") }
            account.deleteLarger = octets
        }
        account.markExisting = markExisting
        account.rebuildState = rebuildState
        account.statePath = stateFile
        self.init(accounts: [account], poll: poll)
    }

    /// Fetches every account at once, and again every ``poll`` seconds until cancelled or
    /// stopped, handing each round to `report`. Returns the exit status of the single round
    /// (without ``poll``), or 128 + the signal once `stop` was requested: the round in progress
    /// ends gracefully (see ``FetchStop``) and a `--poll` pause ends at once.
    public func run(progress: TerminalProgress?, stop: FetchStop? = nil, report: (FetchRound) -> Void) async throws -> Int32 {
        let fetcher = {
            var fetcher = Fetcher(progress: progress)
            fetcher.stop = stop
            return fetcher
        }()
        while true {
            let results = await withTaskGroup(of: (Int, FetchResult).self) { group in
                for (index, account) in accounts.enumerated() {
                    group.addTask { (index, await fetcher.fetch(account)) }
                }
                var results = [FetchResult?](repeating: nil, count: accounts.count)
                for await (index, result) in group { results[index] = result }
                return results.map { $0! }
            }
            progress?.finish()
            let round = FetchRound(accounts: results)
            report(round)
            if let code = stop?.exitCode { return code }
            guard let poll else { return round.exitCode }
            let clock = ContinuousClock()
            let end = clock.now + .seconds(poll)
            while clock.now < end {
                if let code = stop?.exitCode { return code }
                try await Task.sleep(for: min(.milliseconds(100), end - clock.now))
            }
        }
    }
}

/// The results of fetching every account once, and what `postie fetch` prints about them.
public struct FetchRound: Sendable, Encodable, Equatable {
    public var accounts: [FetchResult]
    /// The worst account's: 0 all done, 1 some messages failed, 2 a session broke off, 3 a
    /// local problem.
    public var exitCode: Int32

    public init(accounts: [FetchResult]) {
        self.accounts = accounts
        exitCode = (accounts.map(\.status).max() ?? .ok).exitCode
    }

    /// The warnings on standard error, then the summary on standard output: one line per
    /// account, or with `json` the `--json` document (`{"accounts": [...], "exit_code": N}`).
    public func output(json: Bool) -> [CommandOutput] {
        var output: [CommandOutput] = []
        for result in accounts {
            for warning in result.warnings { output.append(.standardError("postie fetch: warning: \(result.account): \(warning)\n")) }
        }
        if json {
            if let document = try? CommandJSON.document(self) { output.append(.standardOutput(document)) }
        } else {
            for result in accounts { output.append(.standardOutput(result.summaryLine + "\n")) }
        }
        return output
    }
}
