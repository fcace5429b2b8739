import MailBackend
import Testing

@Suite struct DovecotSQLConfigTests {
    /// PostfixAdmin's DOVECOT.txt, as administrators copy it.
    static let postfixAdmin = """
        # Database driver: mysql, pgsql, sqlite
        driver = pgsql
        connect = host=localhost dbname=postfix user=postfix password='se cr\\'et' port=5433
        default_pass_scheme = SHA512-CRYPT

        # Query to retrieve the password.
        password_query = SELECT username AS user,password FROM mailbox WHERE username = '%u' AND active='1'
        user_query = SELECT '/var/vmail/' || maildir AS home, 2000 AS uid, 2000 AS gid \\
            FROM mailbox WHERE username = '%u' AND active = '1'
        iterate_query = SELECT username AS user FROM mailbox
        """

    @Test func parsesPostfixAdminFile() throws {
        let config = try DovecotSQLConfig(parsing: Self.postfixAdmin, name: "dovecot-sql.conf.ext")
        #expect(config.driver == "pgsql")
        #expect(config.connect == ["host": "localhost", "dbname": "postfix", "user": "postfix", "password": "se cr'et", "port": "5433"])
        #expect(config.defaultPassScheme == "SHA512-CRYPT")
        let password = try #require(config.passwordQuery)
        #expect(password.sql { "$\($0 + 1)" } == "SELECT username AS user,password FROM mailbox WHERE username = $1 AND active='1'")
        #expect(password.values(.init(user: "a@example.org")) == ["a@example.org"])
        let user = try #require(config.userQuery)
        #expect(user.sql { "$\($0 + 1)" } == "SELECT '/var/vmail/' || maildir AS home, 2000 AS uid, 2000 AS gid FROM mailbox WHERE username = $1 AND active = '1'")
        #expect(config.iterateQuery?.parameters.isEmpty == true)
    }

    @Test func defaultSchemeIsDovecotsMD5() throws {
        let config = try DovecotSQLConfig(parsing: "driver = pgsql\nconnect = user=x\npassword_query = SELECT password FROM u WHERE name = '%u'", name: "f")
        #expect(config.defaultPassScheme == "MD5")
    }

    @Test(arguments: [
        ("driver = sqlite\nconnect = user=x\npassword_query = SELECT 1", "not supported yet"),
        ("driver = mysql\nconnect = host=db user\npassword_query = SELECT 1", "connect: 'user' has no =value"),
        ("driver = oracle\nconnect = user=x\npassword_query = SELECT 1", "unknown driver"),
        ("connect = user=x\npassword_query = SELECT 1", "driver: missing"),
        ("driver = pgsql\npassword_query = SELECT 1", "connect: missing"),
        ("driver = pgsql\nconnect = user=x", "neither password_query nor user_query"),
        ("driver = pgsql\nconnect = user=x\npasword_query = SELECT 1", "line 3: unknown setting 'pasword_query'"),
        ("driver = pgsql\nconnect = user='x\npassword_query = SELECT 1", "not closed"),
        ("driver = pgsql\nconnect = user=x\npassword_query = SELECT 1 WHERE a = '%q'", "unknown variable %q"),
    ])
    func refusesWithTheKey(text: String, message: String) {
        #expect {
            _ = try DovecotSQLConfig(parsing: text, name: "/etc/dovecot/dovecot-sql.conf.ext")
        } throws: { error in
            "\(error)".hasPrefix("/etc/dovecot/dovecot-sql.conf.ext: ") && "\(error)".contains(message)
        }
    }

    @Test(arguments: [
        // Quoted variables, several in one literal, modifiers, long forms, unquoted ones.
        ("WHERE u = '%u'", "WHERE u = $1", ["x'; DROP TABLE mailbox; --@Example.org"]),
        ("WHERE local = '%Ln' AND domain = '%Ld'", "WHERE local = $1 AND domain = $2", ["x'; drop table mailbox; --", "example.org"]),
        ("WHERE u = '%n@%d'", "WHERE u = $1", ["x'; DROP TABLE mailbox; --@Example.org"]),
        ("WHERE u = '%{user}' AND s = '%s'", "WHERE u = $1 AND s = $2", ["x'; DROP TABLE mailbox; --@Example.org", "pop3"]),
        ("WHERE u = %u", "WHERE u = $1", ["x'; DROP TABLE mailbox; --@Example.org"]),
        // Literals without variables stay SQL; %% is a percent; '' a quote.
        ("WHERE a = '1' AND n LIKE 'x%%' AND q = 'it''s'", "WHERE a = '1' AND n LIKE 'x%' AND q = 'it''s'", []),
        ("WHERE q = 'it''s %u'", "WHERE q = $1", ["it's x'; DROP TABLE mailbox; --@Example.org"]),
    ])
    func variablesBecomeParameters(query: String, sql: String, values: [String]) throws {
        let parsed = try SQLQuery(query)
        #expect(parsed.sql { "$\($0 + 1)" } == sql)
        // The hostile name is a value, never SQL text.
        #expect(parsed.values(.init(user: "x'; DROP TABLE mailbox; --@Example.org")) == values)
        #expect(!parsed.sql { "$\($0 + 1)" }.contains("DROP"))
    }

    @Test func connectStringKeywords() throws {
        let config = try DovecotSQLConfig(parsing: "driver = pgsql\nconnect = host=/run/postgresql  dbname = mail user=dovecot\nuser_query = SELECT 1", name: "f")
        #expect(config.connect == ["host": "/run/postgresql", "dbname": "mail", "user": "dovecot"])
    }
}

@Suite struct VariableTemplateTests {
    @Test(arguments: [
        ("/srv/mail/%d/%n", "/srv/mail/example.org/Alice"),
        ("/srv/mail/%Ld/%Ln", "/srv/mail/example.org/alice"),
        ("%{domain}/%{username}/%%", "example.org/Alice/%"),
        ("%Uu", "ALICE@EXAMPLE.ORG"),
    ])
    func expands(template: String, expected: String) throws {
        #expect(try VariableTemplate(template).expand(.init(user: "Alice@example.org")) == expected)
    }

    @Test(arguments: ["%", "%q", "%{nope}", "%{user", "%L%"])
    func refuses(template: String) {
        #expect(throws: VariableTemplate.ParseError.self) { try VariableTemplate(template) }
    }

    @Test func usernameFormatStillRefusesOtherVariables() {
        #expect(UsernameFormat("%s") == nil)
        #expect(UsernameFormat("%{user}") == nil)
        #expect(UsernameFormat("%Ln@%Ld", defaultDomain: "Example.org")?.normalize("Bob") == "bob@example.org")
    }
}
