// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "postie",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "postie", targets: ["postie"]),
        .library(name: "POP3Core", targets: ["POP3Core"]),
        .library(name: "POP3Server", targets: ["POP3Server"]),
        .library(name: "MaildirStore", targets: ["MaildirStore"]),
        .library(name: "MboxStore", targets: ["MboxStore"]),
        .library(name: "Passwords", targets: ["Passwords"]),
        .library(name: "MailBackend", targets: ["MailBackend"]),
        .library(name: "ServerKit", targets: ["ServerKit"]),
        .library(name: "DurableFiles", targets: ["DurableFiles"]),
        .library(name: "SASL", targets: ["SASL"]),
        .library(name: "POP3Client", targets: ["POP3Client"]),
        .library(name: "POP3Fetch", targets: ["POP3Fetch"]),
        .library(name: "POP3Bench", targets: ["POP3Bench"]),
        .library(name: "POP3Check", targets: ["POP3Check"]),
        .library(name: "LMTPCore", targets: ["LMTPCore"]),
        .library(name: "LMTPServer", targets: ["LMTPServer"]),
        .library(name: "PostgresStore", targets: ["PostgresStore"]),
        .library(name: "DovecotSQL", targets: ["DovecotSQL"]),
        .library(name: "MariaDB", targets: ["MariaDB"]),
        .library(name: "PostieApp", targets: ["PostieApp"]),
        .library(name: "OAuth2", targets: ["OAuth2"]),
        .library(name: "LDAPDirectory", targets: ["LDAPDirectory"]),
        .library(name: "PAMAuth", targets: ["PAMAuth"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0", traits: ["YAML"]),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.8.0"),
    ],
    targets: [
        /// Wire types, parser, encoder, limits and message transforms: NIOCore only.
        .target(
            name: "POP3Core",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")]
        ),
        /// The only POSIX layer: EINTR-safe reads and writes, atomic replace with fsync, flock,
        /// directory listing, spool files. Blocking calls, for thread pools and tools.
        .target(
            name: "DurableFiles",
            dependencies: [
                "CLinuxCalls",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        /// The protocol-neutral seams: user databases, mail stores, maildrops, delivery, and the
        /// errors that cross them. Stores and user databases import this, never a server.
        .target(
            name: "MailBackend",
            dependencies: [
                "SASL", "POP3Core", "DurableFiles", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        /// One server skeleton for every listener (POP3, LMTP): bind then serve, graceful
        /// shutdown, listener addresses, CIDR access lists, PROXY protocol, TLS, idle timeout,
        /// connection limits, the login throttle, session ids and the audit log writer.
        .target(
            name: "ServerKit",
            dependencies: [
                "DurableFiles", "SASL", "COpenSSLCrypto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        /// The POP3 channel and session state machine on ServerKit; renders backend errors as
        /// response codes.
        .target(
            name: "POP3Server",
            dependencies: [
                "POP3Core", "SASL", "MailBackend", "ServerKit", "DurableFiles",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        /// The Maildir backend; all file I/O runs on a thread pool.
        .target(
            name: "MaildirStore",
            dependencies: [
                "POP3Core", "MailBackend", "DurableFiles", "SASL",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        /// The mbox backend: `/var/mail` spools as MTAs write them, locked as Debian policy 11.6
        /// says, rewritten crash-safely at QUIT; all file I/O runs on a thread pool.
        .target(
            name: "MboxStore",
            dependencies: [
                "POP3Core", "MailBackend", "DurableFiles", "SASL",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        /// An async POP3 client on the same POP3Core types as the server.
        .target(
            name: "POP3Client",
            dependencies: [
                "POP3Core", "SASL", "DurableFiles",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        /// `postie fetch`: POP3 download into a Maildir or mbox, crash-safe, with UIDL state.
        .target(
            name: "POP3Fetch",
            dependencies: [
                "POP3Client", "POP3Core", "DurableFiles",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        /// `postie bench`: a POP3 load generator with HdrHistogram latency percentiles; its
        /// `--resume` clients run the system's OpenSSL, whose sessions can be kept and offered.
        .target(
            name: "POP3Bench",
            dependencies: [
                "POP3Client", "POP3Core", "COpenSSLTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        /// LMTP (RFC 2033) wire types, parser, reply encoder, message canonicalizer and the
        /// session state machine: NIOCore only.
        .target(
            name: "LMTPCore",
            dependencies: ["POP3Core", .product(name: "NIOCore", package: "swift-nio")]
        ),
        /// The LMTP listener: connections, spooling, delivery through the MailDelivery seam.
        .target(
            name: "LMTPServer",
            dependencies: [
                "LMTPCore", "MailBackend", "DurableFiles", "ServerKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        /// `postie migrate`: copy POP3 mailboxes into Maildirs keeping UIDLs, compare two servers.
        .target(
            name: "Migration",
            dependencies: [
                "POP3Client", "POP3Core", "MaildirStore", "SASL", "DurableFiles",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        /// `postie check`: the port-110 test procedure, its verdicts, thresholds and perfdata.
        .target(
            name: "POP3Check",
            dependencies: [
                "POP3Client", "POP3Core", "SASL", "COpenSSLTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        /// The system's OpenSSL libssl, for the TLS probes of `postie check` (libssl-dev).
        .systemLibrary(
            name: "COpenSSLTLS", path: "Sources/COpenSSLTLS",
            providers: [.apt(["libssl-dev"])]
        ),
        /// SASL mechanisms (RFC 5034, 4616, 2195, 5802, 7677), server side.
        .target(name: "SASL", dependencies: ["COpenSSLCrypto"]),
        /// crypt(3) from libxcrypt.
        .systemLibrary(name: "CCrypt", path: "Sources/CCrypt"),
        /// Linux system calls without a glibc wrapper (openat2), as inline C functions.
        .systemLibrary(name: "CLinuxCalls", path: "Sources/CLinuxCalls"),
        /// Digests, HMAC, PBKDF2 and RSA signatures from the system's OpenSSL libcrypto (libssl-dev).
        .systemLibrary(
            name: "COpenSSLCrypto", path: "Sources/COpenSSLCrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        /// Password schemes as doveadm writes them, and the Dovecot-style passwd-file user
        /// database with its editor.
        .target(
            name: "Passwords",
            dependencies: [
                "CCrypt", "COpenSSLCrypto", "MailBackend", "DurableFiles", "SASL",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        /// Linux-PAM's types and constants only: libpam is loaded at run time (no -dev package to build).
        .systemLibrary(name: "CPAM", path: "Sources/CPAM"),
        /// The PAM passdb: PAM conversations in privileged auth-worker processes started before
        /// the server drops root, and the pool the server talks to them through.
        .target(
            name: "PAMAuth",
            dependencies: [
                "CPAM", "MailBackend", "Passwords", "SASL",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        /// OAuth 2.0 bearer tokens (RFC 6750) for SASL OAUTHBEARER and XOAUTH2: signed JWTs
        /// checked against a JWKS file or URL, or RFC 7662 introspection over a small HTTP client.
        .target(
            name: "OAuth2",
            dependencies: [
                "MailBackend", "DurableFiles",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ]
        ),
        /// Dovecot's SQL passdb and userdb (`dovecot-sql.conf.ext`) whatever the database: rows
        /// become users (fields, `userdb_` prefetch, `nopassword`, a decoy hash for unknown
        /// users); each driver (PostgresStore, MariaDB) supplies the rows through MailBackend's
        /// SQLRowSource.
        .target(
            name: "DovecotSQL",
            dependencies: [
                "MailBackend", "Passwords", "DurableFiles", "SASL",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        /// MariaDB Connector/C's types and function pointer types, for dlopen(3): no `link`, so
        /// the build needs no libmariadb-dev (scripts/check-mariadb-shim checks the layouts).
        .systemLibrary(name: "CMariaDB", path: "Sources/CMariaDB"),
        /// The MySQL/MariaDB driver of `dovecot-sql.conf.ext` (`driver = mysql`): libmariadb.so.3
        /// loaded at run time, prepared statements on a small pool of dedicated threads.
        .target(
            name: "MariaDB",
            dependencies: [
                "CMariaDB", "MailBackend", "DurableFiles",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        /// The PostgreSQL backend: users, mailboxes, deduplicated chunked bodies, advisory-lock maildrops.
        .target(
            name: "PostgresStore",
            dependencies: [
                "POP3Core", "MailBackend", "DurableFiles", "Passwords", "SASL", "COpenSSLCrypto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        /// OpenLDAP's C API, declared for dlopen: no libldap-dev and no link at build time.
        .systemLibrary(name: "CLDAP", path: "Sources/CLDAP"),
        /// Dovecot's LDAP passdb and userdb (`dovecot-ldap.conf.ext`) over libldap, opened at run
        /// time; its blocking calls run on threads of its own.
        .target(
            name: "LDAPDirectory",
            dependencies: [
                "CLDAP", "MailBackend", "Passwords", "SASL", "DurableFiles",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        /// The composition root: the settings table, flags and config file, one store factory
        /// for every command, the server launcher, privilege drop, reload, metrics endpoint,
        /// log handler, `deliver`, user and database administration, the demo.
        .target(
            name: "PostieApp",
            dependencies: [
                "POP3Core", "POP3Server", "ServerKit", "MailBackend", "DurableFiles", "MaildirStore", "MboxStore", "Passwords", "SASL",
                "LMTPCore", "LMTPServer", "PostgresStore", "POP3Client", "POP3Fetch", "OAuth2", "LDAPDirectory", "PAMAuth", "DovecotSQL",
                "MariaDB",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        /// ArgumentParser command definitions only; everything they run is in PostieApp (and,
        /// for check, fetch, bench and migrate, in their own modules).
        .executableTarget(
            name: "postie",
            dependencies: [
                "PostieApp", "POP3Server", "MailBackend", "DurableFiles", "MaildirStore", "Migration", "POP3Fetch", "POP3Bench",
                "POP3Check", "POP3Client", "PAMAuth",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "POP3CoreTests", dependencies: ["POP3Core"]),
        .testTarget(name: "SASLTests", dependencies: ["SASL"]),
        .testTarget(name: "LMTPCoreTests", dependencies: ["LMTPCore", .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(
            name: "LMTPServerTests",
            dependencies: [
                "LMTPCore", "LMTPServer", "MailBackend", "ServerKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "POP3ServerTests",
            dependencies: [
                "POP3Core", "POP3Server", "MailBackend", "ServerKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "POP3ClientTests",
            dependencies: [
                "POP3Client", "POP3Core", "POP3Server", "MailBackend", "ServerKit", "SASL",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(name: "POP3FetchTests", dependencies: ["POP3Fetch", "POP3Client", "DurableFiles"]),
        .testTarget(
            name: "POP3BenchTests",
            dependencies: [
                "POP3Bench", "POP3Client", "POP3Core",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "POP3CheckTests", dependencies: ["POP3Check"]),
        .testTarget(
            name: "PostgresStoreTests",
            dependencies: [
                "PostgresStore", "DovecotSQL", "MailBackend", "DurableFiles", "POP3Core", "Passwords",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        .testTarget(name: "MaildirStoreTests", dependencies: ["MaildirStore", "MailBackend", "DurableFiles", "POP3Core"]),
        .testTarget(name: "MboxStoreTests", dependencies: ["MboxStore", "MailBackend", "DurableFiles", "POP3Core", .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(
            name: "DurableFilesTests",
            dependencies: [
                "DurableFiles", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]),
        .testTarget(name: "MailBackendTests", dependencies: ["MailBackend", "DurableFiles"]),
        .testTarget(name: "PAMAuthTests", dependencies: ["PAMAuth", "CPAM"]),
        .testTarget(
            name: "DovecotSQLTests",
            dependencies: ["DovecotSQL", "MailBackend", "Passwords", "SASL", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(name: "MariaDBTests", dependencies: ["MariaDB", "CMariaDB", "MailBackend"]),
        .testTarget(
            name: "ServerKitTests",
            dependencies: [
                "ServerKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "PostieAppTests",
            dependencies: [
                "PostieApp", "MailBackend", "MaildirStore", "ServerKit", "POP3Server", "LMTPCore", "PostgresStore", "Passwords",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "OAuth2Tests",
            dependencies: [
                "OAuth2", "MailBackend", "PostieApp",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ]
        ),
        .testTarget(name: "LDAPDirectoryTests", dependencies: ["LDAPDirectory", "MailBackend", "SASL"]),
        .testTarget(name: "MigrationTests", dependencies: ["Migration", "MaildirStore", "MailBackend"]),
        .testTarget(
            name: "PasswordsTests",
            dependencies: ["Passwords", "MailBackend", "SASL", .product(name: "Logging", package: "swift-log")]
        ),
    ]
)
