import LDAPDirectory
import MailBackend

/// Dovecot's `dovecot-sql.conf.ext` (`--passdb sql:FILE`) and its queries' `%` variables,
/// which become bound parameters.
///
/// Invariants: parsing answers the same twice; every query's SQL has exactly one placeholder
/// per parameter, in order, and as many values as parameters; a user name never enters the
/// SQL text itself.
enum DovecotSQLConfigTarget {
    static func run(_ data: UnsafeRawBufferPointer) {
        let text = String(decoding: data, as: UTF8.self)
        guard let config = try? DovecotSQLConfig(parsing: text, name: "fuzz.conf") else {
            return
        }
        // Compared as values: a description would print `connect`'s dictionary in an order
        // of its own each time.
        let again = try? DovecotSQLConfig(parsing: text, name: "fuzz.conf")
        require(again == config, "parsing is not deterministic")
        for query in [config.passwordQuery, config.userQuery, config.iterateQuery].compactMap({ $0 }) {
            let marker = "\u{1}P\u{1}"
            let sql = query.sql { _ in marker }
            require(sql.components(separatedBy: marker).count - 1 == query.parameters.count,
                    "\(query.parameters.count) parameters, placeholders: \(sql.debugDescription)")
            let values = query.values(VariableTemplate.Values(user: "x'); DROP TABLE t; --@example.org"))
            require(values.count == query.parameters.count, "\(values.count) values for \(query.parameters.count) parameters")
            require(!sql.contains("DROP TABLE t") || text.contains("DROP TABLE t"), "a user name reached the SQL text")
        }
    }
}

/// Dovecot's `dovecot-ldap.conf.ext` (`--passdb ldap:FILE`), attribute lists, and the RFC 4515
/// and RFC 4514 escaping of user names in filters and DNs.
///
/// Invariants: parsing answers the same twice; an escaped filter value holds no `*`, `(`, `)`
/// or NUL, and every backslash starts a two-digit hex escape; an escaped DN value has no
/// unescaped separator (`,` `+` `;` `=` `"` `<` `>`).
enum DovecotLDAPConfigTarget {
    static func run(_ data: UnsafeRawBufferPointer) {
        let text = String(decoding: data, as: UTF8.self)
        checkEscaping(text)
        if let config = try? DovecotLDAPConfig(parsing: text, name: "fuzz.conf") {
            // Compared as values: a description would print `lines`, a dictionary, in an order
            // of its own each time.
            let again = try? DovecotLDAPConfig(parsing: text, name: "fuzz.conf")
            require(again == config, "parsing is not deterministic")
        }
        _ = try? AttributeMapping.parseList(text)
    }

    static func checkEscaping(_ value: String) {
        let filter = Array(LDAPEscaping.filterValue(value).unicodeScalars)
        var i = 0
        while i < filter.count {
            let c = filter[i]
            require(c != "*" && c != "(" && c != ")" && c != "\u{0}", "unescaped \(c) in a filter value")
            if c == "\\" {
                require(i + 2 < filter.count && filter[i + 1].properties.isASCIIHexDigit && filter[i + 2].properties.isASCIIHexDigit,
                        "a backslash without two hex digits in a filter value")
                i += 3
            } else {
                i += 1
            }
        }
        let dn = Array(LDAPEscaping.dnValue(value).unicodeScalars)
        var escaped = false
        for c in dn {
            if escaped {
                escaped = false
                continue
            }
            if c == "\\" {
                escaped = true
                continue
            }
            require(!",+;=\"<>".unicodeScalars.contains(c) && c != "\u{0}", "unescaped \(c) in a DN value")
        }
        require(!escaped, "a DN value ends in a lone backslash")
    }
}
