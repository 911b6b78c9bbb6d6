import BinaryCoding
import CRM
import Foundation
import KVStore
import Sealing

/// The half-way state of a sign-in that passed the password and waits for the second factor:
/// one per user at `c/<workspace>/tk/<user id>` (a newer sign-in replaces it), holding the
/// SHA-256 of the ticket handed out, for five minutes and five wrong codes.
public struct SignInTicket: Equatable, Sendable {
    public var digest: [UInt8]
    public var application: String
    public var boundAddress: String?
    public var createdAtMillis: UInt64
    public var failures: UInt8
    /// The digest of the device token the sign-in came with: known once the sign-in completes.
    public var device: [UInt8]?

    public static let lifetimeMillis: UInt64 = 5 * 60_000
    public static let maxFailures: UInt8 = 5
    /// Format 2 adds the device; tickets of format 1 still decode.
    static let format: UInt8 = 2

    var encoded: [UInt8] {
        var writer = BinaryWriter()
        writer.u8(Self.format)
        writer.raw(digest)
        writer.blob(Array(application.utf8))
        writer.optionalBlob(boundAddress.map { Array($0.utf8) })
        writer.u64(createdAtMillis)
        writer.u8(failures)
        writer.optionalBlob(device)
        return writer.bytes
    }

    init(
        digest: [UInt8], application: String, boundAddress: String?, createdAtMillis: UInt64, device: [UInt8]? = nil
    ) {
        self.device = device
        self.digest = digest
        self.application = application
        self.boundAddress = boundAddress
        self.createdAtMillis = createdAtMillis
        failures = 0
    }

    init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        guard let format = reader.u8(), format == 1 || format == Self.format,
            let digest = reader.raw(HMACSHA256.byteCount), let application = reader.text(limit: 256),
            let address = reader.optionalBlob(limit: 64), let created = reader.u64(), let failures = reader.u8()
        else { return nil }
        if format == Self.format {
            guard let device = reader.optionalBlob(limit: HMACSHA256.byteCount) else { return nil }
            self.device = device
        }
        guard reader.isAtEnd else { return nil }
        self.digest = digest
        self.application = application
        boundAddress = address.map { String(decoding: $0, as: UTF8.self) }
        createdAtMillis = created
        self.failures = failures
    }
}

/// Tickets: `crm_t_`, the user's id in hexadecimal, `_`, and 43 characters of base64url (256
/// random bits). The id says where the ticket is kept; only its digest is stored.
public enum TicketTokens {
    public static let prefix = "crm_t_"

    public static func generate(for user: CRMID) throws -> String {
        let random = try SessionTokens.generate().dropFirst(SessionTokens.prefix.count)
        return prefix + user.description + "_" + random
    }

    /// The user and digest of `ticket`, or nil for anything not shaped like a ticket.
    public static func parse(_ ticket: String) -> (user: CRMID, digest: [UInt8])? {
        guard ticket.utf8.count <= 128, ticket.hasPrefix(prefix) else { return nil }
        let rest = ticket.dropFirst(prefix.count)
        guard let separator = rest.firstIndex(of: "_"), let user = CRMID(hex: String(rest[..<separator])),
            SessionTokens.digest(SessionTokens.prefix + rest[rest.index(after: separator)...]) != nil
        else { return nil }
        return (user, HMACSHA256.sha256(Array(ticket.utf8)))
    }
}
