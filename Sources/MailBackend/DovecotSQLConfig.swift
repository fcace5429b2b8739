/// A Dovecot `dovecot-sql.conf.ext` file, read as Dovecot reads it: `key = value` lines, `#`
/// comments, a value continued on the next line after a trailing `\`.
///
///     driver = pgsql
///     connect = host=localhost dbname=postfix user=postfix password=secret
///     default_pass_scheme = SHA512-CRYPT
///     password_query = SELECT username AS user, password FROM mailbox WHERE username = '%u' AND active = '1'
///     user_query = SELECT maildir, 2000 AS uid, 2000 AS gid FROM mailbox WHERE username = '%u'
///     iterate_query = SELECT username AS user FROM mailbox
///
/// - SeeAlso: https://doc.dovecot.org/2.3/configuration_manual/authentication/sql/
public struct DovecotSQLConfig: Sendable, Hashable {
    /// `driver`: `pgsql` (PostgreSQL) or `mysql` (MySQL/MariaDB); `sqlite` is refused.
    public var driver: String
    /// `connect`'s `key=value` pairs, already unquoted: libpq's keywords for `pgsql` (host,
    /// port, dbname, user, password, sslmode, ...), Dovecot's for `mysql` (host, port, dbname,
    /// user, password, ssl_ca, ...).
    public var connect: [String: String]
    /// `default_pass_scheme`: the scheme of a password without `{SCHEME}` (Dovecot's default MD5).
    public var defaultPassScheme: String
    public var passwordQuery: SQLQuery?
    public var userQuery: SQLQuery?
    public var iterateQuery: SQLQuery?

    /// Why a file was refused, naming the line and key.
    public struct ParseError: Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// The keys read here. Dovecot's others (`password_query` aside) are refused, so a
    /// setting that would be silently ignored is seen at once.
    static let keys: Set<String> = ["driver", "connect", "default_pass_scheme", "password_query", "user_query", "iterate_query"]

    /// Parses a file's text; `name` (its path) starts every error.
    public init(parsing text: String, name: String) throws(ParseError) {
        var values: [String: String] = [:]
        var pending: (key: String, value: String, line: Int)?
        func finish() { if let p = pending { values[p.key] = p.value.trimmingBlanks } }
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(raw)
            if line.hasSuffix("\r") { line = line.dropLast() }
            if var open = pending {
                let continues = line.hasSuffix("\\")
                open.value = (open.value + " " + (continues ? line.dropLast() : line).trimmingBlanks).trimmingBlanks
                pending = continues ? open : nil
                if !continues { values[open.key] = open.value.trimmingBlanks }
                continue
            }
            let trimmed = line.trimmingBlanks
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            guard let eq = trimmed.firstIndex(of: "=") else {
                throw ParseError(description: "\(name): line \(index + 1): expected key = value")
            }
            let key = trimmed[..<eq].trimmingBlanks
            guard Self.keys.contains(key) else {
                throw ParseError(description: "\(name): line \(index + 1): unknown setting '\(key)' (known: \(Self.keys.sorted().joined(separator: ", ")))")
            }
            var value = trimmed[trimmed.index(after: eq)...].trimmingBlanks
            if value.hasSuffix("\\") {
                value.removeLast()
                pending = (key, value.trimmingBlanks, index + 1)
            } else {
                values[key] = value
            }
        }
        finish()
        guard let driver = values["driver"], !driver.isEmpty else { throw ParseError(description: "\(name): driver: missing (driver = pgsql or mysql)") }
        switch driver {
        case "pgsql", "mysql": break
        case "sqlite", "cassandra":
            throw ParseError(description: "\(name): driver: '\(driver)' is not supported yet; pgsql (PostgreSQL) and mysql (MySQL/MariaDB) are")
        default:
            throw ParseError(description: "\(name): driver: unknown driver '\(driver)'; use pgsql or mysql")
        }
        self.driver = driver
        guard let connect = values["connect"] else { throw ParseError(description: "\(name): connect: missing (connect = host=... dbname=... user=... password=...)") }
        do {
            self.connect = try driver == "mysql" ? Self.parseMySQLConnect(connect) : Self.parseConnect(connect)
        } catch {
            throw ParseError(description: "\(name): connect: \(error.description)")
        }
        defaultPassScheme = (values["default_pass_scheme"] ?? "MD5").uppercased()
        func query(_ key: String) throws(ParseError) -> SQLQuery? {
            guard let text = values[key], !text.isEmpty else { return nil }
            do {
                return try SQLQuery(text)
            } catch {
                throw ParseError(description: "\(name): \(key): \(error.description)")
            }
        }
        passwordQuery = try query("password_query")
        userQuery = try query("user_query")
        iterateQuery = try query("iterate_query")
        guard passwordQuery != nil || userQuery != nil else {
            throw ParseError(description: "\(name): neither password_query nor user_query is set")
        }
    }

    /// libpq's `keyword=value` list: values may be single-quoted, with `\'` and `\\` inside.
    /// - SeeAlso: https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING-KEYWORD-VALUE
    static func parseConnect(_ text: String) throws(ParseError) -> [String: String] {
        var result: [String: String] = [:]
        var characters = Array(text)[...]
        func skipSpaces() { while let c = characters.first, c == " " || c == "\t" { characters = characters.dropFirst() } }
        skipSpaces()
        while !characters.isEmpty {
            var key = ""
            while let c = characters.first, c != "=", c != " ", c != "\t" {
                key.append(c)
                characters = characters.dropFirst()
            }
            skipSpaces()
            guard characters.popFirst() == "=" else { throw ParseError(description: "'\(key)' has no =value") }
            skipSpaces()
            var value = ""
            if characters.first == "'" {
                characters = characters.dropFirst()
                var closed = false
                while let c = characters.popFirst() {
                    if c == "\\", let escaped = characters.popFirst() {
                        value.append(escaped)
                    } else if c == "'" {
                        closed = true
                        break
                    } else {
                        value.append(c)
                    }
                }
                guard closed else { throw ParseError(description: "the quoted value of '\(key)' is not closed") }
            } else {
                while let c = characters.first, c != " ", c != "\t" {
                    characters = characters.dropFirst()
                    if c == "\\", let escaped = characters.popFirst() { value.append(escaped) } else { value.append(c) }
                }
            }
            guard !key.isEmpty else { throw ParseError(description: "a value without a keyword") }
            result[key] = value
            skipSpaces()
        }
        return result
    }
}

extension DovecotSQLConfig {
    /// Dovecot's MySQL `connect`: `key=value` words split at spaces, each at its first `=`;
    /// no quoting, so a value is taken as written (a password may hold `'` and `\`, not a space).
    /// - SeeAlso: Dovecot's src/lib-sql/driver-mysql.c, driver_mysql_parse_connect_string
    static func parseMySQLConnect(_ text: String) throws(ParseError) -> [String: String] {
        var result: [String: String] = [:]
        for word in text.split(whereSeparator: { $0 == " " || $0 == "\t" }) {
            guard let eq = word.firstIndex(of: "=") else { throw ParseError(description: "'\(word)' has no =value") }
            let key = String(word[..<eq])
            guard !key.isEmpty else { throw ParseError(description: "a value without a keyword") }
            result[key] = String(word[word.index(after: eq)...])
        }
        return result
    }
}

/// One of Dovecot's SQL queries with its `%` variables turned into bound parameters: a
/// single-quoted literal holding variables (`'%u'`, `'%n@%d'`) becomes one parameter, and so
/// does a variable outside quotes. The user's name therefore never becomes SQL text, whatever
/// it holds (`x'; DROP TABLE mailbox; --`). `%%` is a literal `%`.
public struct SQLQuery: Sendable, Hashable {
    /// The query as written in the file.
    public let text: String
    /// The query with placeholders, as pieces: SQL text, or parameter number (0-based).
    let pieces: [Piece]
    /// Each parameter's template, in order.
    public let parameters: [VariableTemplate]

    enum Piece: Sendable, Hashable {
        case sql(String)
        case parameter(Int)
    }

    public init(_ text: String) throws(VariableTemplate.ParseError) {
        var pieces: [Piece] = []
        var parameters: [VariableTemplate] = []
        var sql = ""
        func addParameter(_ template: String) throws(VariableTemplate.ParseError) {
            if !sql.isEmpty { pieces.append(.sql(sql)) }
            sql = ""
            pieces.append(.parameter(parameters.count))
            parameters.append(try VariableTemplate(template))
        }
        var characters = Array(text)[...]
        while let c = characters.popFirst() {
            switch c {
            case "'":
                // A literal up to the closing quote; '' inside is a quote.
                var literal = ""
                var closed = false
                while let d = characters.popFirst() {
                    if d == "'" {
                        if characters.first == "'" {
                            characters = characters.dropFirst()
                            literal += "''"
                            continue
                        }
                        closed = true
                        break
                    }
                    literal.append(d)
                }
                guard closed else { throw VariableTemplate.ParseError(description: "a quoted string is not closed") }
                if literal.contains("%") {
                    let template = try VariableTemplate(literal.replacingDoubledQuotes)
                    if template.hasVariables {
                        try addParameter(literal.replacingDoubledQuotes)
                    } else {
                        sql += "'" + template.expand(.init(user: "")).replacingQuotesDoubled + "'"
                    }
                } else {
                    sql += "'" + literal + "'"
                }
            case "%":
                // A variable outside quotes: the variable with its modifiers, as one parameter.
                var variable = "%"
                while let m = characters.first, m == "L" || m == "U" {
                    variable.append(m)
                    characters = characters.dropFirst()
                }
                guard let next = characters.popFirst() else { throw VariableTemplate.ParseError(description: "the query ends with a lone %") }
                if next == "%" && variable == "%" {
                    sql += "%"
                    continue
                }
                variable.append(next)
                if next == "{" {
                    while let d = characters.popFirst() {
                        variable.append(d)
                        if d == "}" { break }
                    }
                }
                try addParameter(variable)
            default:
                sql.append(c)
            }
        }
        if !sql.isEmpty { pieces.append(.sql(sql)) }
        self.text = text
        self.pieces = pieces
        self.parameters = parameters
    }

    /// The SQL with each parameter written by `placeholder` (PostgreSQL: `$1`, `$2`...).
    public func sql(placeholder: (Int) -> String) -> String {
        pieces.map { piece in
            switch piece {
            case .sql(let text): text
            case .parameter(let index): placeholder(index)
            }
        }.joined()
    }

    /// The parameters' values for one request.
    public func values(_ values: VariableTemplate.Values) -> [String] {
        parameters.map { $0.expand(values) }
    }
}

extension String {
    fileprivate var replacingDoubledQuotes: String {
        split(separator: "''", omittingEmptySubsequences: false).joined(separator: "'")
    }

    fileprivate var replacingQuotesDoubled: String {
        split(separator: "'", omittingEmptySubsequences: false).joined(separator: "''")
    }
}
