import CRM
import Testing

@testable import Identity

/// The exfiltration guard's count: distinct subjects per user per hour, reported once past the
/// bound, afresh in the next hour, with a bounded number of users.
@Suite struct SubjectCounterTests {
    @Test func aUserPastTheBoundIsReportedOnceAnHour() throws {
        let counter = SubjectCounter(limit: 3)
        let ada = try CRMID.random()
        let bob = try CRMID.random()
        let subjects = try (0..<5).map { _ in try CRMID.random() }
        // The same subjects again do not count twice; another user counts apart.
        #expect(!counter.count(Array(subjects[0..<2]), by: ada, now: 0))
        #expect(!counter.count(Array(subjects[0..<2]), by: ada, now: 1))
        #expect(!counter.count(Array(subjects[0..<3]), by: bob, now: 1))
        #expect(!counter.count([subjects[2]], by: ada, now: 2), "three subjects: at the bound, not past it")
        #expect(counter.count([subjects[3]], by: ada, now: 3), "the fourth takes her past it")
        #expect(!counter.count([subjects[4]], by: ada, now: 4), "reported once in the hour")
        #expect(counter.count([subjects[4]], by: bob, now: 5))
        // The next hour counts afresh.
        let hour = SubjectCounter.windowMillis
        #expect(!counter.count(Array(subjects[0..<3]), by: ada, now: hour + 10))
        #expect(counter.count(Array(subjects[3..<5]), by: ada, now: hour + 11))
    }

    @Test func theUsersCountedAreBounded() throws {
        let counter = SubjectCounter(limit: 1)
        let subject = try CRMID.random()
        for index in 0..<(SubjectCounter.maxUsers + 50) {
            _ = counter.count([subject], by: try CRMID.random(), now: UInt64(index))
        }
        #expect(counter.trackedUsers <= SubjectCounter.maxUsers)
    }
}
