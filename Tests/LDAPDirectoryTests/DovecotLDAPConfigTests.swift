import MailBackend
import Testing

@testable import LDAPDirectory

@Suite struct DovecotLDAPConfigTests {
    static let openLDAP = """
        # dovecot-ldap.conf.ext
        uris = ldap://127.0.0.1:3890 ldap://backup.example.org
        dn = cn=dovecot,dc=example,dc=org
        dnpass = "s3cret \\"quoted\\""
        tls = no
        base = ou=people,dc=example,dc=org
        scope = onelevel
        deref = searching
        auth_bind = no
        default_pass_scheme = ssha
        pass_filter = (&(objectClass=inetOrgPerson)(uid=%n))
        pass_attrs = uid=user, userPassword=password, =userdb_home=/srv/mail/%d/%{ldap:uid}
        user_filter = (&(objectClass=inetOrgPerson)(uid=%n))
        user_attrs = homeDirectory=home, =mail=maildir:~/Maildir, mailQuota=quota_rule=*:bytes=%$, description
        iterate_filter = (objectClass=inetOrgPerson)
        iterate_attrs = mail=user
        """

    @Test func readsDovecotsKeys() throws {
        let config = try DovecotLDAPConfig(parsing: Self.openLDAP, name: "ldap.conf")
        #expect(config.uris == ["ldap://127.0.0.1:3890", "ldap://backup.example.org"])
        #expect(config.dn == "cn=dovecot,dc=example,dc=org")
        #expect(config.dnpass == "s3cret \"quoted\"")
        #expect(config.tls == false)
        #expect(config.scope == 1)
        #expect(config.deref == 1)
        #expect(config.authBind == false)
        #expect(config.defaultPassScheme == "SSHA")
        #expect(config.passFilter.template == "(&(objectClass=inetOrgPerson)(uid=%n))")
        #expect(config.passAttrs.map(\.field) == ["user", "password", "userdb_home"])
        #expect(AttributeMapping.attributes(of: config.passAttrs) == ["uid", "userPassword"])
        #expect(AttributeMapping.attributes(of: config.userAttrs) == ["homeDirectory", "mailQuota", "description"])
        #expect(config.lines["pass_attrs"] == 12)
    }

    @Test func dovecotsDefaults() throws {
        let config = try DovecotLDAPConfig(parsing: "hosts = ldap.example.org:389\nbase = dc=example,dc=org\n", name: "f")
        #expect(config.uris == ["ldap://ldap.example.org:389"])
        #expect(config.dn == nil)
        #expect(config.scope == 2)
        #expect(config.deref == 0)
        #expect(config.ldapVersion == 3)
        #expect(config.defaultPassScheme == "CRYPT")
        #expect(config.passFilter.template == "(&(objectClass=posixAccount)(uid=%u))")
        #expect(config.passAttrs.map(\.field) == ["user", "password"])
        #expect(config.userAttrs.map(\.field) == ["home", "uid", "gid"])
        #expect(config.iterateAttrs.map(\.field) == ["user"])
    }

    @Test func mapsAttributesToFields() throws {
        let config = try DovecotLDAPConfig(parsing: Self.openLDAP, name: "ldap.conf")
        let entry = ["homeDirectory": ["/home/alice"], "mailQuota": ["1000"], "uid": ["alice", "al"], "userPassword": ["{SSHA}x"]]
        let user = VariableTemplate.Values(user: "alice@example.org")
        #expect(AttributeMapping.fields(of: entry, list: config.userAttrs, user: user) == [
            "home": "/home/alice", "mail": "maildir:~/Maildir", "quota_rule": "*:bytes=1000",
        ])
        #expect(AttributeMapping.fields(of: entry, list: config.passAttrs, user: user) == [
            "user": "alice", "password": "{SSHA}x", "userdb_home": "/srv/mail/example.org/alice",
        ])
        // A template whose attribute is missing leaves its field out; attribute names match in any case.
        #expect(AttributeMapping.fields(of: ["UID": ["bob"]], list: config.passAttrs, user: user) == [
            "user": "bob", "userdb_home": "/srv/mail/example.org/bob",
        ])
        #expect(AttributeMapping.fields(of: [:], list: config.passAttrs, user: user).isEmpty)
        let withDefault = try AttributeMapping.parseList("=home=/srv/%{ldap:mailHost:local}/%Ln")
        #expect(AttributeMapping.fields(of: [:], list: withDefault, user: .init(user: "Bob")) == ["home": "/srv/local/bob"])
    }

    @Test func fieldsBecomeTheUser() {
        let user = LDAPUserDatabase.user(named: "a", fields: ["home": "/h", "userdb_mail": "maildir:~/M", "nologin": "y", "user": "x"])
        #expect(user.name == "a")
        #expect(user.home == "/h")
        #expect(user.extraFields == ["mail": "maildir:~/M", "nologin": "y"])
        #expect(LDAPUserDatabase.user(named: "a", fields: ["userdb_home": "/u"]).home == "/u")
    }

    @Test(arguments: [
        ("uris = ldap://x\nbase = dc=x\nfrobnicate = 1\n", "f: line 3: unknown setting 'frobnicate'"),
        ("uris = ldap://x\nbase = dc=x\nsasl_mech = GSSAPI\n", "f: line 3: sasl_mech: not supported by Postie yet"),
        ("base = dc=x\n", "f: uris: missing"),
        ("uris = http://x\nbase = dc=x\n", "f: line 1: uris: 'http://x' is not an ldap://"),
        ("uris = ldap://x\n", "f: base: missing"),
        ("uris = ldap://x\nbase = dc=x\nscope = everything\n", "f: line 3: scope: 'everything' is not base, onelevel or subtree"),
        ("uris = ldap://x\nbase = dc=x\nauth_bind = maybe\n", "f: line 3: auth_bind: 'maybe' is neither yes nor no"),
        ("uris = ldap://x\nbase = dc=x\ndn = cn=a\n", "f: dnpass: missing or empty while dn is set"),
        ("uris = ldap://x\nbase = dc=x\npass_filter = (uid=%q)\n", "f: line 3: pass_filter: '(uid=%q)': unknown variable %q"),
        ("uris = ldap://x\nbase = dc=x\npass_attrs = uid=user\n", "f: line 3: pass_attrs: with auth_bind = no"),
        ("uris = ldap://x\nbase = dc=x\nuser_attrs = =home=%{ldap_ptr:x}\n", "f: line 3: user_attrs: '%{ldap_ptr:x}': only %{ldap:attribute}"),
        ("uris = ldap://x\nbase = dc=x\nno equals sign\n", "f: line 3: expected key = value"),
    ])
    func refusesWhatItCannotServe(text: String, message: String) {
        #expect {
            try DovecotLDAPConfig(parsing: text, name: "f")
        } throws: { error in
            "\(error)".hasPrefix(message)
        }
    }

    @Test func authBindNeedsNoPasswordAttribute() throws {
        let config = try DovecotLDAPConfig(
            parsing: "uris = ldap://x\nbase = dc=x\nauth_bind = yes\nauth_bind_userdn = uid=%n,ou=people,dc=x\npass_attrs = uid=user\n", name: "f")
        #expect(config.authBind)
        #expect(config.authBindUserDN?.expand(.init(user: "a,b@d"), escaping: LDAPEscaping.dnValue) == "uid=a\\,b,ou=people,dc=x")
    }
}
