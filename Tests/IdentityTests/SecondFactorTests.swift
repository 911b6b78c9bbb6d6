import CRM
import CRMStateSupport
import Foundation
import KVStore
import Sealing
import Testing

@testable import Identity

/// RFC 6238 TOTP, enrolment, sign-in with a ticket, replay, recovery codes and the lock, on a
/// real state machine.
@Suite struct SecondFactorTests {
    private let password = "correct horse battery staple"

    /// RFC 6238 Appendix B, HMAC-SHA-1 rows (8 digits, the 20-byte ASCII secret).
    @Test func rfc6238AppendixBVectors() {
        let secret = Array("12345678901234567890".utf8)
        let rows: [(UInt64, String)] = [
            (59, "94287082"), (1_111_111_109, "07081804"), (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"), (2_000_000_000, "69279037"), (20_000_000_000, "65353130"),
        ]
        for (seconds, expected) in rows {
            #expect(TOTP.code(secret: secret, step: seconds / 30, digits: 8) == expected, "T = \(seconds)")
        }
        // The six-digit code is the same number's last six digits.
        #expect(TOTP.code(secret: secret, step: 59 / 30) == "287082")
    }

    @Test func base32FollowsRFC4648() {
        let vectors = [
            ("", ""), ("f", "MY"), ("fo", "MZXQ"), ("foo", "MZXW6"), ("foob", "MZXW6YQ"), ("foobar", "MZXW6YTBOI"),
        ]
        for (plain, encoded) in vectors {
            #expect(Base32.encode(Array(plain.utf8)) == encoded)
            #expect(Base32.decode(encoded) == Array(plain.utf8))
            #expect(Base32.decode(encoded.lowercased()) == Array(plain.utf8))
        }
        #expect(Base32.decode("MZXW6YTBO1") == nil) // '1' is not in the alphabet
    }

    @Test func theStepBeforeAndAfterAreAcceptedTwoAwayAreNot() throws {
        let secret = try SecureRandom.bytes(TOTP.secretBytes)
        let now: UInt64 = 1_700_000_000_000
        let step = TOTP.step(atMillis: now)
        for offset in [-1, 0, 1] {
            let candidate = UInt64(Int64(step) + Int64(offset))
            let code = TOTP.code(secret: secret, step: candidate)
            #expect(TOTP.acceptedStep(of: code, secret: secret, atMillis: now, above: 0) == candidate)
        }
        for offset in [-2, 2] {
            let code = TOTP.code(secret: secret, step: UInt64(Int64(step) + Int64(offset)))
            #expect(TOTP.acceptedStep(of: code, secret: secret, atMillis: now, above: 0) == nil, "offset \(offset)")
        }
        // A step at or below the last one used is refused, even when the code is right.
        let current = TOTP.code(secret: secret, step: step)
        #expect(TOTP.acceptedStep(of: current, secret: secret, atMillis: now, above: step) == nil)
        #expect(TOTP.acceptedStep(of: "12345", secret: secret, atMillis: now, above: 0) == nil)
        #expect(TOTP.acceptedStep(of: "12345a", secret: secret, atMillis: now, above: 0) == nil)
    }

    /// A user with a confirmed factor; answers the user, the secret and the recovery codes.
    private func enrolled(_ test: TestDirectory) async throws -> (CRMID, [UInt8], [String]) {
        let user = try await test.createUser("ada", password: password)
        let factor = try test.factor()
        let credentials = try #require(try test.directory.credentials(of: user))
        let (secret, pending) = try factor.enrol(user, credentials.credentials)
        try test.applied(test.directory.replace(user, credentials, with: pending))
        let waiting = try #require(try test.directory.credentials(of: user))
        #expect(waiting.credentials.secondFactor.active == nil && waiting.credentials.secondFactor.pending != nil)
        // A wrong code does not confirm.
        #expect(throws: SecondFactorRefusal.wrongCode) {
            _ = try factor.confirm(user, waiting.credentials, code: "000000", now: test.clock)
        }
        let code = TOTP.code(secret: secret, step: TOTP.step(atMillis: test.clock))
        let confirmed = try factor.confirm(user, waiting.credentials, code: code, now: test.clock)
        #expect(confirmed.recoveryCodes.count == 10 && Set(confirmed.recoveryCodes).count == 10)
        #expect(confirmed.next.credentialEpoch == waiting.credentials.credentialEpoch + 1)
        try test.applied(test.directory.replace(user, waiting, with: confirmed.next))
        test.clock += TOTP.stepMillis // the confirming code's step is spent
        return (user, secret, confirmed.recoveryCodes)
    }

    private func ticket(_ test: TestDirectory) async throws -> String {
        let opened = try await test.signIn.attempt(
            username: "ada", password: password, application: "crm://client/app", address: nil, bindAddress: false,
            now: test.clock)
        #expect(opened.secondFactorRequired && opened.token.hasPrefix(TicketTokens.prefix))
        try test.applied(opened.transaction)
        return opened.token
    }

    private func complete(
        _ test: TestDirectory, _ ticket: String, code: String = "", recovery: String = ""
    ) throws -> SignIn.Completion {
        try test.signIn.complete(
            ticket: ticket, code: code, recoveryCode: recovery, application: "crm://client/app",
            factor: try test.factor(), now: test.clock)
    }

    @Test func aSignInWithAFactorNeedsACodeAndEachCodeWorksOnce() async throws {
        let test = try TestDirectory()
        let (user, secret, _) = try await enrolled(test)
        let code = TOTP.code(secret: secret, step: TOTP.step(atMillis: test.clock))
        let waiting = try await ticket(test)
        let passedAt = test.clock
        guard case .opened(let opened) = try complete(test, waiting, code: code) else {
            Issue.record("the right code was refused")
            return
        }
        try test.applied(opened.transaction)
        let checked = try test.check(opened.token, address: nil)
        #expect(checked.session.user == user && checked.session.secondFactorAtMillis == passedAt)
        #expect(!checked.session.enrolmentOnly)
        // The same code again, with a new ticket: refused (its step is spent).
        guard case .refused = try complete(test, try await ticket(test), code: code) else {
            Issue.record("a used code was accepted again")
            return
        }
    }

    @Test func oneCodeRacedThroughTwoSignInsSucceedsOnce() async throws {
        let test = try TestDirectory()
        let (_, secret, _) = try await enrolled(test)
        let first = try await ticket(test)
        // Two sign-ins of the same user wait at once (one ticket per user: the second replaces
        // the first, so the race is between two completions made from one read).
        let code = TOTP.code(secret: secret, step: TOTP.step(atMillis: test.clock))
        guard case .opened(let a) = try complete(test, first, code: code),
            case .opened(let b) = try complete(test, first, code: code)
        else {
            Issue.record("a completion computed before either applied was refused")
            return
        }
        try test.applied(a.transaction)
        guard case .transaction(.conditionFailed) = try test.apply(b.transaction) else {
            Issue.record("the same code was accepted twice")
            return
        }
    }

    @Test func fiveWrongCodesVoidTheTicket() async throws {
        let test = try TestDirectory()
        let (_, secret, _) = try await enrolled(test)
        let waiting = try await ticket(test)
        for _ in 0..<5 {
            guard case .refused(let counted?, .wrongCode, _) = try complete(test, waiting, code: "000000") else {
                Issue.record("a wrong code was not refused with a count")
                return
            }
            try test.applied(counted)
        }
        let code = TOTP.code(secret: secret, step: TOTP.step(atMillis: test.clock))
        #expect(throws: SignInRefused.self) { _ = try complete(test, waiting, code: code) }
    }

    @Test func tenWrongCodesLockTheFactorForFifteenMinutes() async throws {
        let test = try TestDirectory()
        let (user, secret, _) = try await enrolled(test)
        let factor = try test.factor()
        for _ in 0..<10 {
            let credentials = try #require(try test.directory.credentials(of: user))
            try test.applied(
                test.directory.replace(user, credentials, with: factor.failed(credentials.credentials, now: test.clock))
            )
        }
        let locked = try #require(try test.directory.credentials(of: user)).credentials
        let code = TOTP.code(secret: secret, step: TOTP.step(atMillis: test.clock))
        #expect(throws: SecondFactorRefusal.locked(untilMillis: locked.secondFactor.lockedUntilMillis)) {
            _ = try factor.verified(user, locked, code: code, recoveryCode: "", now: test.clock)
        }
        let later = test.clock + factor.lockMillis
        let fresh = TOTP.code(secret: secret, step: TOTP.step(atMillis: later))
        #expect(try factor.verified(user, locked, code: fresh, recoveryCode: "", now: later).secondFactor.lastStep > 0)
    }

    @Test func recoveryCodesWorkOnceEachAndAreStoredOnlyAsHashes() async throws {
        let test = try TestDirectory()
        let (user, secret, codes) = try await enrolled(test)
        // No stored byte sequence holds a code (either form) or the secret.
        let everything = try test.state.kv.crmScan(from: [], to: [0xFF, 0xFF], limit: 10_000).entries
        let needles =
            codes.flatMap { [Array($0.utf8), Array($0.replacingOccurrences(of: "-", with: "").utf8)] } + [secret]
        for entry in everything {
            let stored = entry.key + entry.value.payload
            for needle in needles {
                #expect(!stored.contains(needle), "a stored value holds a recovery code or the secret")
            }
        }
        let factor = try test.factor()
        var credentials = try #require(try test.directory.credentials(of: user)).credentials
        credentials = try factor.verified(
            user, credentials, code: "", recoveryCode: codes[3].lowercased(), now: test.clock)
        #expect(credentials.secondFactor.unusedRecoveryCodes == 9)
        #expect(throws: SecondFactorRefusal.wrongCode) {
            _ = try factor.verified(user, credentials, code: "", recoveryCode: codes[3], now: test.clock)
        }
        // Regenerating revokes the whole earlier set.
        let (fresh, regenerated) = try factor.regenerated(user, credentials)
        #expect(throws: SecondFactorRefusal.wrongCode) {
            _ = try factor.verified(user, regenerated, code: "", recoveryCode: codes[4], now: test.clock)
        }
        #expect(
            try factor.verified(user, regenerated, code: "", recoveryCode: fresh[0], now: test.clock)
                .secondFactor.unusedRecoveryCodes == 9)
        // Another user's code does not work here (the digest is bound to the user).
        let pepper = try test.records.inUse().key(.pepper)
        #expect(
            RecoveryCodes.digest(fresh[0], user: try CRMID.random(), pepper: pepper)
                != RecoveryCodes.digest(fresh[0], user: user, pepper: pepper))
    }

    @Test func withoutAFactorARequiredSecondFactorGivesAnEnrolmentOnlySession() async throws {
        let test = try TestDirectory()
        _ = try await test.createUser("grace", password: password)
        let token = try await test.signIn("grace", password)
        #expect(try test.check(token).session.enrolmentOnly)
        var sessions = test.sessions
        sessions.policy.mfaRequired = false
        let optional = SignIn(sessions: sessions, hasher: test.signIn.hasher)
        let opened = try await optional.attempt(
            username: "grace", password: password, application: "crm://client/app", address: nil, bindAddress: false,
            now: test.clock)
        try test.applied(opened.transaction)
        #expect(!(try test.check(opened.token, address: nil).session.enrolmentOnly))
    }

    @Test func credentialsAndSessionsOfTheEarlierFormatStillDecode() throws {
        var plain = Credentials(passwordHash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaA")
        #expect(plain.encoded.first == 1)
        #expect(Credentials(encoded: plain.encoded) == plain)
        plain.secondFactor.lastStep = 7
        plain.secondFactor.recoveryCodes = [RecoveryCode(digest: [UInt8](repeating: 9, count: 32), used: true)]
        #expect(plain.encoded.first == 2)
        #expect(Credentials(encoded: plain.encoded) == plain)
        #expect(Credentials(encoded: plain.encoded + [0]) == nil)
    }

    @Test func ticketsAreShapedAndNameTheirUser() throws {
        let user = try CRMID.random()
        let ticket = try TicketTokens.generate(for: user)
        #expect(TicketTokens.parse(ticket)?.user == user)
        #expect(TicketTokens.parse(ticket + "x") == nil)
        #expect(TicketTokens.parse(String(ticket.dropLast())) == nil)
        #expect(TicketTokens.parse("crm_s_" + ticket.dropFirst(6)) == nil)
    }
}

extension TestDirectory {
    func factor() throws -> SecondFactorChanges {
        SecondFactorChanges(directory: directory, pepper: try records.inUse().key(.pepper))
    }
}
