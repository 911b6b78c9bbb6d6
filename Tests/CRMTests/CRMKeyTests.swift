import BinaryCoding
import CRMStateSupport
import Foundation
import KVStore
import Raft
import Sealing
import Storage
import Testing

@testable import CRM

@Suite struct CRMKeyTests {
    @Test func aKeySetOpensOnlyUnderItsKeyAndVersion() throws {
        let kek = try TestKEK()
        let set = try CRMKeySet.generate(version: 3)
        let record = try set.record(wrappedBy: kek.provider)
        let opened = try CRMKeySet.open(record: record, version: 3, kek: kek.provider)
        #expect(opened.checkValue == set.checkValue)
        #expect(
            LookupTokens.token(purpose: "email", normalised: Array("a@b.c".utf8), keySet: opened)
                == LookupTokens.token(purpose: "email", normalised: Array("a@b.c".utf8), keySet: set))

        let other = try TestKEK()
        #expect(throws: CRMKeyError.wrongKey(expected: kek.provider.keyID, actual: other.provider.keyID)) {
            try CRMKeySet.open(record: record, version: 3, kek: other.provider)
        }
        // Opened as another version, or altered anywhere, it is damaged; never half-opened.
        #expect { try CRMKeySet.open(record: record, version: 4, kek: kek.provider) } throws: { error in
            if case CRMKeyError.keySetDamaged(4, _) = error { return true }
            return false
        }
        for position in [0, 20, record.count / 2, record.count - 1] {
            var altered = record
            altered[position] ^= 0x01
            #expect(throws: CRMKeyError.self) { try CRMKeySet.open(record: altered, version: 3, kek: kek.provider) }
        }
    }

    @Test func subjectKeysAndFieldsOpenOnlyWhereTheyWereSealed() throws {
        let set = try CRMKeySet.generate(version: 1)
        let subject = try CRMID.random()
        let key = try SymmetricKey.generate()
        let wrapped = try SubjectKeys.wrap(key, subject: subject, workspace: 1, under: set)
        #expect(SubjectKeys.version(of: wrapped) == 1)
        let unwrapped = try SubjectKeys.unwrap(
            wrapped, subject: subject, workspace: 1, keySets: { $0 == 1 ? set : nil })
        #expect(unwrapped.withUnsafeBytes { Array($0) } == key.withUnsafeBytes { Array($0) })
        #expect(throws: CRMKeyError.self) {
            try SubjectKeys.unwrap(wrapped, subject: try CRMID.random(), workspace: 1, keySets: { _ in set })
        }
        #expect(throws: CRMKeyError.self) {
            try SubjectKeys.unwrap(wrapped, subject: subject, workspace: 2, keySets: { _ in set })
        }
        #expect(throws: CRMKeyError.unknownKeySet(version: 1)) {
            try SubjectKeys.unwrap(wrapped, subject: subject, workspace: 1, keySets: { _ in nil })
        }

        let record = try CRMID.random()
        let place = FieldPlace(workspace: 1, entity: "pe", record: record, field: 3)
        let email = Array("ada@example.com".utf8)
        let first = try FieldSealing.seal(email, at: place, under: key)
        let second = try FieldSealing.seal(email, at: place, under: key)
        #expect(first != second, "every seal draws a fresh nonce")
        #expect(try FieldSealing.open(first, at: place, under: key) == email)
        #expect(!first.contains(subsequence: email))
        var moved = place
        moved.field = 4
        #expect(throws: CRMKeyError.self) { try FieldSealing.open(first, at: moved, under: key) }
        moved = place
        moved.record = try CRMID.random()
        #expect(throws: CRMKeyError.self) { try FieldSealing.open(first, at: moved, under: key) }
        #expect(throws: CRMKeyError.self) {
            try FieldSealing.open(first, at: place, under: try SymmetricKey.generate())
        }
    }

    @Test func lookupTokensAreEqualForEqualValuesAndDifferByPurposeAndKeySet() throws {
        let set = try CRMKeySet.generate(version: 1)
        let value = Array("ada@example.com".utf8)
        let token = LookupTokens.token(purpose: "email", normalised: value, keySet: set)
        #expect(token.count == LookupTokens.byteCount)
        #expect(token == LookupTokens.token(purpose: "email", normalised: value, keySet: set))
        #expect(token != LookupTokens.token(purpose: "name", normalised: value, keySet: set))
        #expect(
            token != LookupTokens.token(purpose: "email", normalised: value, keySet: try CRMKeySet.generate(version: 1))
        )
        // Length prefixes keep purpose and value apart.
        #expect(
            LookupTokens.token(purpose: "ab", normalised: Array("c".utf8), keySet: set)
                != LookupTokens.token(purpose: "a", normalised: Array("bc".utf8), keySet: set))
    }

    @Test func aMemberWithAnotherKeyOrNoneFindsItsProblem() throws {
        let kek = try TestKEK()
        let state = try TestState()
        let keys = CRMKeyState(kek: .success(kek.provider), kv: state.kv)
        #expect(try keys.inUse() == nil)
        #expect(keys.problem() == nil)
        let (create, set) = try KeySetChanges.first(kek: kek.provider)
        #expect(try state.apply(create) == .transaction(.applied(version: 1)))
        // A second creation (another member racing) finds the set already there.
        let (again, _) = try KeySetChanges.first(kek: kek.provider)
        #expect(try state.apply(again) == .transaction(.conditionFailed(condition: 0, current: 1)))
        #expect(try keys.inUse()?.checkValue == set.checkValue)

        let other = try TestKEK()
        let wrong = CRMKeyState(kek: .success(other.provider), kv: state.kv)
        #expect(wrong.problem() == .wrongKey(expected: kek.provider.keyID, actual: other.provider.keyID))
        let missing = CRMKeyState(kek: .failure(.keyUnavailable("crm.key_file is not readable")), kv: state.kv)
        #expect(missing.problem() == .keyUnavailable("crm.key_file is not readable"))
    }

    @Test func rotationRewrapsEverySubjectKeyResumesAfterARestartAndRetiresTheOldVersion() throws {
        let kek = try TestKEK()
        let state = try TestState()
        var keys = CRMKeyState(kek: .success(kek.provider), kv: state.kv)
        try state.apply(try KeySetChanges.first(kek: kek.provider).0)
        let v1 = try #require(try keys.inUse())
        var subjects: [CRMID: [UInt8]] = [:]
        for _ in 0..<300 {
            let subject = try CRMID.random()
            let key = try SymmetricKey.generate()
            subjects[subject] = key.withUnsafeBytes { Array($0) }
            let wrapped = try SubjectKeys.wrap(key, subject: subject, workspace: 1, under: v1)
            try state.apply(
                Transaction(
                    conditions: [.keySet(1)],
                    operations: [.putStamped(key: CRMLayout.subjectKey(workspace: 1, subject: subject), value: wrapped)]
                ))
        }
        let (rotate, v2) = try KeySetChanges.rotation(from: v1, kek: kek.provider)
        #expect(try state.apply(rotate) == .transaction(.applied(version: 302)))
        // A rotation while the job runs is refused, and so is a write sealed under the old set.
        #expect(
            try state.apply(try KeySetChanges.rotation(from: v2, kek: kek.provider).0)
                == .transaction(.conditionFailed(condition: 1, current: 302)))
        #expect(
            try state.apply(Transaction(conditions: [.keySet(1)], operations: [.put(key: [1], value: [])]))
                == .transaction(.conditionFailed(condition: 0, current: 2)))

        var batches = 0
        while let (job, version) = try RewrapJob.current(in: state.kv) {
            #expect(job.from == 1 && job.to == 2)
            let outcome = try state.apply(try job.nextBatch(jobVersion: version, kv: state.kv, keys: keys))
            guard case .transaction(.applied) = outcome else {
                Issue.record("batch \(batches) was not applied: \(outcome)")
                return
            }
            batches += 1
            // A restart midway: a fresh key state resumes from the saved cursor.
            if batches == 1 { keys = CRMKeyState(kek: .success(kek.provider), kv: state.kv) }
            guard batches < 10 else { break }
        }
        #expect(batches == 4, "three batches of at most 128 keys, then the retirement")
        #expect(try state.kv.crmValue(CRMLayout.keySet(1)) == nil, "version 1 is retired")
        #expect(try keys.versionInUse() == 2)
        let page = try state.kv.crmScan(
            from: CRMLayout.vaultPrefix(workspace: 1), to: CRMLayout.end(of: CRMLayout.vaultPrefix(workspace: 1)),
            limit: 1000)
        #expect(page.entries.count == 300)
        let fresh = CRMKeyState(kek: .success(kek.provider), kv: state.kv)
        for (key, value) in page.entries {
            #expect(SubjectKeys.version(of: value.payload) == 2)
            let subject = try #require(CRMID(bytes: Array(key.suffix(CRMID.byteCount))))
            let unwrapped = try SubjectKeys.unwrap(
                value.payload, subject: subject, workspace: 1, keySets: { try? fresh.keySet($0) })
            #expect(unwrapped.withUnsafeBytes { Array($0) } == subjects[subject])
        }
        #expect(try fresh.inUse()?.checkValue == v2.checkValue)
        // Lookup tokens and the pepper stay; every other key is new.
        for purpose in CRMKeySet.Purpose.allCases {
            let same = v1.key(purpose).withUnsafeBytes(Array.init) == v2.key(purpose).withUnsafeBytes(Array.init)
            #expect(same == CRMKeySet.carriedByRotation.contains(purpose), "\(purpose)")
        }
        #expect(throws: CRMKeyError.unknownKeySet(version: 1)) { try fresh.keySet(1) }
    }
}

extension Array where Element == UInt8 {
    fileprivate func contains(subsequence: [UInt8]) -> Bool {
        guard subsequence.count <= count else { return false }
        return (0...(count - subsequence.count)).contains {
            self[$0..<($0 + subsequence.count)].elementsEqual(subsequence)
        }
    }
}
