import Crypto
import Foundation
import SwiftASN1
import X509

/// The demo's own small PKI: a CA and a server certificate for `localhost`, 127.0.0.1 and ::1
/// that it signs, both ECDSA P-256, so that STLS (RFC 2595) and implicit TLS (RFC 8314) can be
/// tried and `postie check --ca-file` can verify them as it verifies a real server.
enum DemoCertificates {
    struct Files {
        /// The CA certificate a client trusts (`--ca-file`, `curl --cacert`).
        var ca: String
        var certificate: String
        var key: String
    }

    /// Writes `ca.pem`, `cert.pem` and `key.pem` (0600) into `directory`.
    static func create(in directory: String, now: Date = Date()) throws -> Files {
        let caKey = P256.Signing.PrivateKey()
        let caName = try DistinguishedName { CommonName("Postie demo CA") }
        let caPublicKey = Certificate.PublicKey(caKey.publicKey)
        let caIdentifier = SubjectKeyIdentifier(hash: caPublicKey)
        let ca = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(),
            publicKey: caPublicKey,
            notValidBefore: now - 3600, notValidAfter: now + 10 * 365 * 86400,
            issuer: caName, subject: caName,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                caIdentifier
            },
            issuerPrivateKey: Certificate.PrivateKey(caKey))

        let serverKey = P256.Signing.PrivateKey()
        let serverPublicKey = Certificate.PublicKey(serverKey.publicKey)
        let server = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(),
            publicKey: serverPublicKey,
            // A year: `postie check` warns below 30 days left.
            notValidBefore: now - 3600, notValidAfter: now + 365 * 86400,
            issuer: caName, subject: try DistinguishedName { CommonName("localhost") },
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames([
                    .dnsName("localhost"),
                    .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])),
                    .ipAddress(ASN1OctetString(contentBytes: ArraySlice([UInt8](repeating: 0, count: 15) + [1]))),
                ])
                SubjectKeyIdentifier(hash: serverPublicKey)
                AuthorityKeyIdentifier(keyIdentifier: caIdentifier.keyIdentifier)
            },
            issuerPrivateKey: Certificate.PrivateKey(caKey))

        let files = Files(ca: directory + "/ca.pem", certificate: directory + "/cert.pem", key: directory + "/key.pem")
        try Demo.write(files.ca, try ca.serializeAsPEM().pemString + "\n")
        try Demo.write(files.certificate, try server.serializeAsPEM().pemString + "\n")
        try Demo.write(files.key, serverKey.pemRepresentation + "\n")
        return files
    }
}
