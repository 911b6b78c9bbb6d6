import Testing
@testable import Simulation

@Suite struct CheckerTests {
    @Test func placeholder() {
        #expect(LinearizabilityChecker().check([]) == .linearizable)
    }
}
