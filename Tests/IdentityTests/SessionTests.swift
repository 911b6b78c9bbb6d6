import CRM
import CRMStateSupport
import Foundation
import KVStore
import Sealing
import Testing

@testable import Identity

/// A directory on in-memory replicated state, with key set 1 in place and a fast hasher.
final class TestDirectory {
    let kek: TestKEK
    let state: TestState
    let records: RecordChanges
    let signIn: SignIn
    var clock: UInt64 = 1_000_000

    init() throws {
        kek = try TestKEK()
        state = try TestState()
        let keys = CRMKeyState(kek: .success(kek.provider), kv: state.kv)
        try state.apply(try KeySetChanges.first(kek: kek.provider).0)
        records = RecordChanges(keys: keys, kv: state.kv)
        let hasher = try PasswordHasher(pepper: try SymmetricKey.generate())
        signIn = SignIn(sessions: SessionChanges(directory: DirectoryChanges(records: records)), hasher: hasher)
    }

    var directory: DirectoryChanges { signIn.sessions.directory }
    var sessions: SessionChanges { signIn.sessions }

    @discardableResult
    func apply(_ transaction: Transaction) throws -> KVOutcome {
        clock += 1000
        return try state.apply(transaction, at: clock)
    }

    func applied(_ transaction: Transaction) throws {
        guard case .transaction(.applied) = try apply(transaction) else {
            throw RecordError.badRequest("the transaction did not apply")
        }
    }

    func createUser(_ name: String, password: String, email: String? = nil) async throws -> CRMID {
        let id = try CRMID.random()
        try applied(
            try directory.createUser(
                id: id, username: name, displayName: nil, email: email, roles: ["sales-rep"], teams: [],
                credentials: Credentials(passwordHash: try await signIn.hasher.hash(password)),
                principal: "crm://client/admin", now: clock))
        return id
    }

    func signIn(_ name: String, _ password: String, application: String = "crm://client/app") async throws -> String {
        let opened = try await signIn.attempt(
            username: name, password: password, application: application, address: "192.0.2.7", bindAddress: false,
            now: clock)
        try applied(opened.transaction)
        return opened.token
    }

    func check(
        _ token: String, application: String = "crm://client/app", address: String? = "192.0.2.7"
    ) throws
        -> CheckedSession
    {
        try sessions.check(token: token, application: application, address: address, now: clock)
    }
}

@Suite struct SessionTests {
    private let password = "correct horse battery staple"

    private func refusal(_ body: () throws -> Any) -> SessionRefusal? {
        do {
            _ = try body()
            return nil
        } catch {
            return error as? SessionRefusal
        }
    }

    @Test func bootstrapWorksOnceAndItsUserMustChangeThePassword() async throws {
        let test = try TestDirectory()
        let first = try CRMID.random()
        try test.applied(
            try test.directory.bootstrap(
                id: first, username: "root-admin", passwordHash: try await test.signIn.hasher.hash(password),
                principal: "crm://client/crmctl", now: test.clock))
        let again = try test.directory.bootstrap(
            id: try CRMID.random(), username: "second-admin", passwordHash: try await test.signIn.hasher.hash(password),
            principal: "crm://client/crmctl", now: test.clock)
        guard case .transaction(.conditionFailed) = try test.apply(again) else {
            Issue.record("a second bootstrap applied")
            return
        }
        let opened = try await test.signIn.attempt(
            username: "ROOT-admin", password: password, application: "crm://client/crmctl", address: nil,
            bindAddress: false, now: test.clock)
        #expect(opened.passwordChangeOnly && opened.user == first)
        try test.applied(opened.transaction)
        let checked = try test.check(opened.token, application: "crm://client/crmctl")
        #expect(checked.session.passwordChangeOnly)
        let user = try #require(try test.records.read(.user, first))
        #expect(try test.records.open(user.record, fields: ["roles"])["roles"] == .texts(["security-admin"]))

        // The new password: policy first, then every old session ends and a fresh one opens.
        await #expect(throws: PasswordRefusal.tooShort(minimum: 12)) {
            _ = try await test.signIn.changePassword(checked, current: password, new: "short", now: test.clock)
        }
        await #expect(throws: PasswordRefusal.containsUsername) {
            _ = try await test.signIn.changePassword(
                checked, current: password, new: "root-admin is my name", now: test.clock)
        }
        await #expect(throws: SignInRefused.self) {
            _ = try await test.signIn.changePassword(
                checked, current: "not the password", new: "a quite new passphrase", now: test.clock)
        }
        let (token, change) = try await test.signIn.changePassword(
            checked, current: password, new: "a quite new passphrase", now: test.clock)
        try test.applied(change)
        #expect(refusal { try test.check(opened.token, application: "crm://client/crmctl") } == .unknown)
        #expect(try test.check(token, application: "crm://client/crmctl").session.passwordChangeOnly == false)
        #expect(try test.directory.credentials(of: first)?.credentials.credentialEpoch == 2)
    }

    @Test func everySignInFailureIsTheSameAndCostsAHash() async throws {
        let test = try TestDirectory()
        let ada = try await test.createUser("ada", password: password)
        for (name, attempt) in [("ada", "wrong password!!"), ("nobody", password), ("a b", password), ("", "")] {
            await #expect(throws: SignInRefused(), "\(name)") {
                _ = try await test.signIn.attempt(
                    username: name, password: attempt, application: "crm://client/app", address: nil,
                    bindAddress: false, now: test.clock)
            }
        }
        await #expect(throws: SignInRefused()) {
            _ = try await test.signIn.attempt(
                username: "ada", password: String(repeating: "x", count: 1 << 20), application: "crm://client/app",
                address: nil, bindAddress: false, now: test.clock)
        }
        // Disabled: the right password is refused the same way.
        let record = try #require(try test.records.read(.user, ada))
        try test.applied(try test.records.update(record, set: ["status": .text("disabled")], clear: []))
        await #expect(throws: SignInRefused()) {
            _ = try await test.signIn.attempt(
                username: "ada", password: password, application: "crm://client/app", address: nil,
                bindAddress: false, now: test.clock)
        }
    }

    @Test func sessionsAreBoundExpireAndEndWithTheirEpochs() async throws {
        let test = try TestDirectory()
        let ada = try await test.createUser("ada", password: password)
        let token = try await test.signIn("ada", password)
        let checked = try test.check(token)
        #expect(checked.session.user == ada && !checked.session.passwordChangeOnly)
        #expect(refusal { try test.check(token, application: "crm://client/other") } == .otherApplication)
        #expect(try test.check(token, address: "198.51.100.1").session.user == ada, "not bound: any address")

        // Bound to the end user's address when the application asks.
        let bound = try await test.signIn.attempt(
            username: "ada", password: password, application: "crm://client/app", address: "192.0.2.7",
            bindAddress: true, now: test.clock)
        try test.applied(bound.transaction)
        #expect(refusal { try test.check(bound.token, address: "198.51.100.1") } == .otherAddress)
        #expect(refusal { try test.check(bound.token, address: nil) } == .otherAddress)

        // Malformed tokens never reach the store.
        for bad in [
            "", "crm_s_", token + "A", String(token.dropLast()), "Bearer " + token, token + "\r\n",
            "crm_x_" + token.dropFirst(6), token.replacingOccurrences(of: "crm_s_", with: "crm_s_="),
        ] {
            #expect(refusal { try test.check(bad) } == .malformed, "\(bad.prefix(20))")
        }
        #expect(refusal { try test.check("crm_s_" + String(repeating: "A", count: 43)) } == .unknown)

        // Idle: touched at most once a minute; 30 minutes without a call ends it.
        test.clock += 30_000
        #expect(test.sessions.touch(try test.check(token), now: test.clock) == nil, "not yet a minute")
        test.clock += 60_000
        try test.applied(try #require(test.sessions.touch(try test.check(token), now: test.clock)))
        test.clock += 29 * 60_000
        #expect(try test.check(token).session.user == ada)
        test.clock += 60_000
        #expect(refusal { try test.check(token) } == .idle)

        // Absolute: 12 hours however busy.
        let busy = try await test.signIn("ada", password)
        let openedAt = test.clock
        var expiry: SessionRefusal?
        for _ in 0..<30 {
            test.clock += 29 * 60_000
            do {
                if let touch = test.sessions.touch(try test.check(busy), now: test.clock) { try test.applied(touch) }
            } catch {
                expiry = error as? SessionRefusal
                break
            }
        }
        #expect(expiry == .expired)
        #expect(test.clock - openedAt >= 12 * 3_600_000 && test.clock - openedAt < 12 * 3_600_000 + 29 * 60_000)

        // A role change (authz epoch) ends every session; so does disabling the user.
        let first = try await test.signIn("ada", password)
        let second = try await test.signIn("ada", password)
        #expect(try test.sessions.sessions(of: ada).count >= 2)
        let credentials = try #require(try test.directory.credentials(of: ada))
        try test.applied(test.directory.raiseAuthzEpoch(of: ada, from: credentials))
        #expect(refusal { try test.check(first) } == .revoked && refusal { try test.check(second) } == .revoked)
        let third = try await test.signIn("ada", password)
        let record = try #require(try test.records.read(.user, ada))
        try test.applied(try test.records.update(record, set: ["status": .text("disabled")], clear: []))
        #expect(refusal { try test.check(third) } == .disabled)

        // Sign-out ends one session and its entry.
        let count = try test.sessions.sessions(of: ada).count
        let ended = try #require(SessionTokens.digest(third))
        try test.applied(test.sessions.end(digest: ended, of: ada))
        #expect(try test.sessions.sessions(of: ada).count == count - 1)
        #expect(refusal { try test.check(third) } == .unknown)
    }

    /// A session's entry under its user ends with the token's digest: one beginning with 0xFF
    /// (one session in 256) must still be listed.
    @Test func everySessionIsListedWhateverItsDigest() async throws {
        let test = try TestDirectory()
        let ada = try await test.createUser("ada", password: password)
        let credentials = try #require(try test.directory.credentials(of: ada))
        var token = try SessionTokens.generate()
        for _ in 0..<100_000 where SessionTokens.digest(token)?.first != 0xFF { token = try SessionTokens.generate() }
        let digest = try #require(SessionTokens.digest(token))
        #expect(digest.first == 0xFF)
        try test.applied(
            test.sessions.open(
                token: token, user: ada, credentials: credentials, application: "crm://client/app", address: nil,
                now: test.clock))
        #expect(try test.sessions.sessions(of: ada).map(\.digest) == [digest])
    }

    @Test func anImportedHashIsReplacedAtTheFirstSignIn() async throws {
        let test = try TestDirectory()
        let id = try CRMID.random()
        // passlib 1.7.4's pbkdf2_sha512 of the password, as Odoo stores it.
        let imported =
            "$pbkdf2-sha512$25000$3JvT2junVGrNWYtxzlnrHQ$YGblkj8tvFzRpSF/DqOOsLLJMSn8rJUvfXSmtn4sW/DYMcCZo/GM5J5fyzd6aaJKaQzKcc0ihNyCdcFt7rFaoQ"
        try test.applied(
            try test.directory.createUser(
                id: id, username: "imported", displayName: "Imp Orted", email: "imp@example.com", roles: [],
                teams: [], credentials: Credentials(passwordHash: imported), principal: "crm://client/admin",
                now: test.clock))
        _ = try await test.signIn("imported", password)
        let stored = try #require(try test.directory.credentials(of: id))
        #expect(stored.credentials.passwordHash.hasPrefix("$argon2id$v=19$m=19456,t=2,p=1$"))
        #expect(stored.credentials.credentialEpoch == 1, "a re-hash ends no session")
        _ = try await test.signIn("imported", password)
    }
}
