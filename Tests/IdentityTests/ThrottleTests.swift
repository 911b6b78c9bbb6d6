import CRM
import CRMStateSupport
import Foundation
import KVStore
import Sealing
import Testing

@testable import Identity

/// Sign-in throttling on a real state machine with a test clock: the tiers in order with their
/// timings, the right password refused during a back-off, the lock, spraying, and the reset.
@Suite struct ThrottleTests {
    private let password = "correct horse battery staple"

    private func throttles(_ test: TestDirectory) throws -> SignInThrottles {
        SignInThrottles(directory: test.directory, pepper: try test.records.inUse().key(.pepper))
    }

    /// Applies at `test.clock` without moving it (the timings below are exact).
    private func applied(_ test: TestDirectory, _ transaction: Transaction) throws {
        guard case .transaction(.applied) = try test.state.apply(transaction, at: test.clock) else {
            throw RecordError.badRequest("the transaction did not apply")
        }
    }

    /// One attempt at `test.clock`: "ok", "refused", or "throttled <ms>" / "locked".
    private func attempt(
        _ test: TestDirectory, _ name: String, _ guess: String, address: String = "198.51.100.7"
    ) async throws -> String {
        let throttles = try throttles(test)
        let source = AttemptSource.of(address: address, application: "crm://client/app")
        do {
            let opened = try await test.signIn.attempt(
                username: name, password: guess, application: "crm://client/app", address: address,
                bindAddress: false, now: test.clock, throttles: throttles, source: source)
            try applied(test, opened.transaction)
            return "ok"
        } catch let refused as SignInRefused {
            let failure = try throttles.failure(username: name, user: refused.user, source: source, now: test.clock)
            try applied(test, failure.transaction)
            return "refused"
        } catch let throttled as SignInThrottled {
            return throttled.retryAfterMillis.map { "throttled \($0)" } ?? "locked"
        }
    }

    @Test func tierOneBacksOffOneSourceDoublingFromOneSecond() async throws {
        let test = try TestDirectory()
        _ = try await test.createUser("ada", password: password)
        for _ in 0..<5 { #expect(try await attempt(test, "ada", "wrong guess") == "refused") }
        // The fifth failure within 15 minutes starts a 1 s back-off; the right password waits too.
        #expect(try await attempt(test, "ada", password) == "throttled 1000")
        // Another network is not held back by this one's failures.
        #expect(try await attempt(test, "ada", password, address: "203.0.113.9") == "ok")
        // The success forgot every count: five more failures, then the back-off starts again at 1 s.
        for _ in 0..<5 { #expect(try await attempt(test, "ada", "wrong guess") == "refused") }
        test.clock += 1_000
        #expect(try await attempt(test, "ada", "wrong guess") == "refused") // the sixth: 2 s
        #expect(try await attempt(test, "ada", password) == "throttled 2000")
        test.clock += 2_000
        #expect(try await attempt(test, "ada", "wrong guess") == "refused") // the seventh: 4 s
        #expect(try await attempt(test, "ada", password) == "throttled 4000")
        test.clock += 4_000
        #expect(try await attempt(test, "ada", password) == "ok")
    }

    @Test func tierTwoBacksOffTheAccountFromAnySourceAndTierThreeLocksIt() async throws {
        let test = try TestDirectory()
        let user = try await test.createUser("ada", password: password)
        // Twenty failures from twenty networks (no tier 1 for any of them) within the hour.
        for index in 0..<19 {
            #expect(try await attempt(test, "ada", "wrong guess", address: "10.0.\(index).1") == "refused")
        }
        #expect(try await attempt(test, "ada", "wrong guess", address: "10.0.19.1") == "refused")
        #expect(try await attempt(test, "ada", password, address: "10.0.99.1") == "throttled 60000")
        // Back-offs double per further failure; then 100 consecutive failures lock the account.
        var failures = 20
        var address = 100
        while failures < 100 {
            test.clock += 3_600_000
            address += 1
            #expect(try await attempt(test, "ada", "wrong guess", address: "10.1.\(address % 250).1") == "refused")
            failures += 1
        }
        let state = try #require(try throttles(test).account(user)).0
        #expect(state.locked && state.consecutive == 100)
        test.clock += 24 * 3_600_000
        #expect(try await attempt(test, "ada", password) == "locked")
        // Unlocking forgets the failures; the right password works again.
        try test.applied(Transaction(operations: [try throttles(test).cleared(user)]))
        #expect(try await attempt(test, "ada", password) == "ok")
    }

    @Test func aNetworkSprayingTenAccountsIsRefusedForFifteenMinutes() async throws {
        let test = try TestDirectory()
        _ = try await test.createUser("victim", password: password)
        for index in 0..<9 {
            #expect(try await attempt(test, "user-\(index)", "Winter2026!") == "refused") // unknown users count too
        }
        #expect(try await attempt(test, "victim", "Winter2026!") == "refused") // the tenth account
        let blocked = try await attempt(test, "victim", password)
        #expect(blocked == "throttled \(15 * 60_000)", "\(blocked)")
        // The same /24, another address: refused; another network: not.
        #expect(try await attempt(test, "victim", password, address: "198.51.100.200").hasPrefix("throttled"))
        #expect(try await attempt(test, "victim", password, address: "192.0.2.1") == "ok")
        test.clock += 15 * 60_000
        #expect(try await attempt(test, "victim", password) == "ok")
    }

    @Test func sourcesAreNetworksOrTheApplication() {
        let v4 = AttemptSource.of(address: "198.51.100.7", application: "crm://client/app")
        #expect(v4 == AttemptSource.of(address: "198.51.100.250", application: "crm://client/other"))
        #expect(v4.isNetwork && v4.description == "198.51.100.0/24")
        let v6 = AttemptSource.of(address: "2001:db8:1:2:3::4", application: "crm://client/app")
        #expect(v6 == AttemptSource.of(address: "2001:db8:1:2:ffff::1", application: "crm://client/app"))
        #expect(v6.description == "2001:db8:1:2::/64")
        let app = AttemptSource.of(address: nil, application: "crm://client/app")
        #expect(!app.isNetwork && app.description == "crm://client/app")
    }

    @Test func throttleRecordsRoundTripAndRefuseGarbage() {
        var state = AccountThrottle()
        let source = AttemptSource.of(address: "192.0.2.1", application: "a")
        for time in stride(from: UInt64(1000), to: 30_000, by: 1000) {
            state = state.failed(from: source, now: time, policy: ThrottlePolicy())
        }
        #expect(AccountThrottle(encoded: state.encoded) == state)
        #expect(AccountThrottle(encoded: state.encoded + [1]) == nil)
        #expect(AccountThrottle(encoded: Array(state.encoded.dropLast())) == nil)
    }
}
