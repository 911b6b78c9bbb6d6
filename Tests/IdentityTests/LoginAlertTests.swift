import CRM
import CRMStateSupport
import Foundation
import KVStore
import Sealing
import Testing

@testable import Identity

/// Login events and alerts: places from the geo fixture, the signals a sign-in raises against
/// the user's history, the sealed history, and a known device passing the account-wide back-off.
@Suite struct LoginAlertTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/geo.csv").path
    private let password = "correct horse battery staple"

    private func context(
        _ address: String, device: [UInt8]? = nil, geo: GeoTable? = nil
    ) throws -> SignInContext {
        SignInContext(
            address: address, source: AttemptSource.of(address: address, application: "crm://client/app"),
            userAgent: "Example/1.0", device: device,
            place: try (geo ?? GeoTable.load(path: Self.fixture)).place(of: address))
    }

    @Test func theGeoFileFindsTheLongestPrefixAndRefusesBadLines() throws {
        let geo = try GeoTable.load(path: Self.fixture)
        #expect(geo.count == 5)
        #expect(geo.place(of: "198.51.100.9")?.country == "CN")
        #expect(geo.place(of: "203.0.113.9")?.country == "GB")
        #expect(geo.place(of: "203.0.113.200")?.country == "FR", "the /25 inside the /24 wins")
        #expect(geo.place(of: "2001:db8:1::5")?.country == "DE")
        #expect(geo.place(of: "10.1.2.3") == nil && geo.place(of: "not an address") == nil)
        // London to Paris is about 344 km; Shanghai to London about 9,200 km.
        let london = try #require(geo.place(of: "203.0.113.9"))
        let paris = try #require(geo.place(of: "203.0.113.200"))
        #expect(abs(london.kilometres(to: paris) - 344) < 5)
        #expect(abs(try #require(geo.place(of: "198.51.100.1")).kilometres(to: london) - 9_200) < 100)
        for bad in ["10.0.0.0/8,CN,31", "10.0.0.0/33,CN,1,1", "10.0.0.0/8,China,1,1", "10.0.0.0/8,CN,91,1"] {
            #expect(throws: GeoTable.LoadError.self) { try GeoTable(csv: bad) }
        }
    }

    @Test func aFirstSignInRaisesNothingAndLaterOnesAreComparedWithIt() throws {
        let device = HMACSHA256.sha256(Array("device one".utf8))
        let shanghai = try context("198.51.100.7", device: device)
        let start: UInt64 = 1_000_000_000
        #expect(LoginSignals.alerts(LoginHistory(), shanghai, failuresBefore: 0, now: start).isEmpty)
        let history = LoginHistory().visited(
            from: shanghai.source, at: .init(atMillis: start, place: shanghai.place!), now: start
        ).signedIn(device: device)
        // The same device and network a day later: nothing.
        #expect(LoginSignals.alerts(history, shanghai, failuresBefore: 0, now: start + 86_400_000).isEmpty)
        // Another device, from Beijing (1,070 km) half an hour later: a new device and network,
        // and faster than 1,000 km/h.
        let beijing = try context("192.0.2.7", device: HMACSHA256.sha256(Array("device two".utf8)))
        #expect(
            LoginSignals.alerts(history, beijing, failuresBefore: 0, now: start + 1_800_000) == [
                .newDevice, .newNetwork, .impossibleTravel,
            ])
        // Two hours later the same trip is possible; London is a new country (and too far).
        #expect(
            LoginSignals.alerts(history, beijing, failuresBefore: 0, now: start + 7_200_000) == [
                .newDevice, .newNetwork,
            ])
        let london = try context("203.0.113.9", device: device)
        #expect(
            LoginSignals.alerts(history, london, failuresBefore: 0, now: start + 7_200_000) == [
                .newNetwork, .newCountry, .impossibleTravel,
            ])
        // Success after three failures, even from the known device and network.
        #expect(
            LoginSignals.alerts(history, shanghai, failuresBefore: 3, now: start + 60_000) == [.successAfterFailures])
        #expect(LoginSignals.alerts(history, shanghai, failuresBefore: 2, now: start + 60_000).isEmpty)
        // Without a geo file no place is known: no country or travel alerts.
        let unplaced = try context("203.0.113.9", device: device, geo: GeoTable())
        #expect(LoginSignals.alerts(history, unplaced, failuresBefore: 0, now: start + 60_000) == [.newNetwork])
    }

    @Test func theHistoryIsBoundedAndStoredSealed() throws {
        let test = try TestDirectory()
        let user = try CRMID.random()
        let histories = LoginHistories(directory: test.directory)
        var history = LoginHistory()
        let marker = "Wqxagentmarker"
        for index in 0..<40 {
            history = history.adding(
                .init(
                    atMillis: UInt64(index), outcome: .passwordRefused, address: "198.51.100.\(index)",
                    userAgent: marker + String(repeating: "x", count: 400)))
            let source = AttemptSource.of(address: "10.\(index).0.1", application: "a")
            history = history.visited(from: source, at: nil, now: UInt64(index))
            history = history.signedIn(device: HMACSHA256.sha256([UInt8(index)]))
        }
        #expect(history.attempts.count == LoginHistory.maxAttempts && history.attempts.last?.atMillis == 39)
        #expect(history.attempts.allSatisfy { $0.userAgent.utf8.count == LoginHistory.maxUserAgentBytes })
        #expect(history.devices.count == LoginHistory.maxDevices && history.networks.count == 40)
        try test.applied(try histories.write(history, of: user, readAt: nil))
        let (read, version) = try histories.read(user)
        #expect(read == history && version != nil)
        // Neither the addresses nor the user agents appear in any stored byte.
        let stored = try test.state.kv.crmScan(from: [], to: [0xFF], limit: 10_000).entries
        let bytes = stored.flatMap { $0.key + $0.value.payload }
        for needle in [marker, "198.51.100.3"] {
            #expect(!bytes.contains(subsequence: Array(needle.utf8)), "\(needle) is stored in the clear")
        }
        // A write from a stale read is refused by its condition.
        guard case .transaction(.conditionFailed) = try test.apply(try histories.write(history, of: user, readAt: nil))
        else {
            Issue.record("a history written over a newer one applied")
            return
        }
    }

    @Test func aKnownDeviceWithASecondFactorIsNotHeldByTheAccountBackOff() async throws {
        let test = try TestDirectory()
        let user = try await test.createUser("ada", password: password)
        let factor = try test.factor()
        let credentials = try #require(try test.directory.credentials(of: user))
        let (secret, pending) = try factor.enrol(user, credentials.credentials)
        try test.applied(test.directory.replace(user, credentials, with: pending))
        let waiting = try #require(try test.directory.credentials(of: user))
        let code = TOTP.code(secret: secret, step: TOTP.step(atMillis: test.clock))
        try test.applied(
            test.directory.replace(
                user, waiting, with: try factor.confirm(user, waiting.credentials, code: code, now: test.clock).next))
        let throttles = SignInThrottles(directory: test.directory, pepper: try test.records.inUse().key(.pepper))
        // Twenty failures from twenty networks: the account backs off for everyone...
        for index in 0..<20 {
            let source = AttemptSource.of(address: "10.0.\(index).1", application: "crm://client/app")
            try test.applied(
                try throttles.failure(username: "ada", user: user, source: source, now: test.clock).transaction)
        }
        func attempt(_ address: String, known: Bool) async throws -> String {
            do {
                let opened = try await test.signIn.attempt(
                    username: "ada", password: password, application: "crm://client/app", address: address,
                    bindAddress: false, now: test.clock, throttles: throttles,
                    source: AttemptSource.of(address: address, application: "crm://client/app"),
                    device: HMACSHA256.sha256([1]), knownDevice: { _ in known })
                return opened.secondFactorRequired ? "ticket" : "session"
            } catch is SignInThrottled {
                return "throttled"
            }
        }
        #expect(try await attempt("198.51.100.7", known: false) == "throttled")
        // ...but a known device gets its ticket: the sign-in still needs the second factor.
        #expect(try await attempt("198.51.100.7", known: true) == "ticket")
        // Tier 1 still holds a known device on a network that failed five times.
        #expect(try await attempt("10.0.19.1", known: true) == "ticket", "one failure from that network")
        for _ in 0..<5 {
            let source = AttemptSource.of(address: "10.0.19.1", application: "crm://client/app")
            try test.applied(
                try throttles.failure(username: "ada", user: user, source: source, now: test.clock).transaction)
        }
        #expect(try await attempt("10.0.19.1", known: true) == "throttled")
    }
}

extension Array where Element == UInt8 {
    fileprivate func contains(subsequence needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= count else { return false }
        return (0...(count - needle.count)).contains { Array(self[$0..<($0 + needle.count)]) == needle }
    }
}
