import Foundation
import KVStore
import Testing

@testable import CRM

@Suite struct ListTests {
    private func every(_ crm: TestCRM, _ query: ListQuery) throws -> [CRMID] {
        var ids: [CRMID] = []
        var after: [UInt8]?
        for _ in 0..<1000 {
            let page = try crm.changes.list(query, after: after)
            #expect(page.records.count <= query.pageSize)
            ids += page.records.map(\.record.id)
            guard let next = page.resumeAfter else { return ids }
            after = next
        }
        Issue.record("the list did not end")
        return ids
    }

    @Test func listsFollowTheirIndexPageByPageAndSkipTheTrash() throws {
        let crm = try TestCRM()
        let company = try crm.create(.company, ["name": .text("Acme")])
        var atAcme: Set<CRMID> = []
        var leads: Set<CRMID> = []
        for number in 0..<23 {
            var fields: [String: FieldValue] = ["last_name": .text("P\(number)")]
            if number % 2 == 0 { fields["company_id"] = .reference(company) }
            if number % 3 == 0 { fields["lifecycle_stage"] = .text("lead") }
            let id = try crm.create(.person, fields)
            if number % 2 == 0 { atAcme.insert(id) }
            if number % 3 == 0 { leads.insert(id) }
        }
        let all = try every(crm, ListQuery(entity: .person, pageSize: 5))
        #expect(all.count == 23 && Set(all).count == 23)
        #expect(all == all.sorted { $0.bytes.lexicographicallyPrecedes($1.bytes) }, "by id")
        #expect(
            Set(try every(crm, ListQuery(entity: .person, index: .company, value: "\(company)", pageSize: 4))) == atAcme
        )
        #expect(Set(try every(crm, ListQuery(entity: .person, index: .stage, value: "lead", pageSize: 3))) == leads)
        // Another index drives, a non-personal filter narrows.
        let both = try every(
            crm,
            ListQuery(
                entity: .person, index: .company, value: "\(company)", filters: ["lifecycle_stage": .text("lead")],
                pageSize: 2))
        #expect(Set(both) == atAcme.intersection(leads))
        let owned = try every(crm, ListQuery(entity: .person, index: .owner, value: "crm://client/app", pageSize: 7))
        #expect(owned.count == 23)
        #expect(try every(crm, ListQuery(entity: .person, index: .owner, value: "crm://client/other")).isEmpty)
        let updated = try every(crm, ListQuery(entity: .person, index: .updated, pageSize: 6))
        #expect(updated.count == 23, "the update-time index holds every entity; the list keeps persons")

        let trashed = all[3]
        try crm.apply(try crm.changes.setDeleted(try crm.read(.person, trashed), true))
        #expect(!(try every(crm, ListQuery(entity: .person))).contains(trashed))
        #expect(try every(crm, ListQuery(entity: .person, includeDeleted: true)).contains(trashed))
        #expect(try every(crm, ListQuery(entity: .person, index: .trash)) == [trashed])
        #expect(try crm.check().isEmpty)
    }

    @Test func aListRefusesPersonalFiltersUnknownIndexesAndBadValues() throws {
        let crm = try TestCRM()
        func refused(_ query: ListQuery) -> String? {
            do {
                _ = try crm.changes.list(query, after: nil)
                return nil
            } catch {
                return "\(error)"
            }
        }
        #expect(
            refused(ListQuery(entity: .person, filters: ["emails": .texts(["a@example.com"])]))?.contains("personal")
                == true)
        #expect(
            refused(ListQuery(entity: .person, filters: ["nope": .bool(true)]))?.contains("no field `nope`") == true)
        #expect(refused(ListQuery(entity: .company, index: .stage, value: "lead"))?.contains("no stage index") == true)
        #expect(refused(ListQuery(entity: .deal, index: .stage, value: "lead"))?.contains("one of") == true)
        #expect(refused(ListQuery(entity: .deal, index: .company, value: "xyz"))?.contains("must be an id") == true)
        #expect(refused(ListQuery(entity: .deal, index: .company))?.contains("needs a `value`") == true)
        #expect(refused(ListQuery(entity: .deal, index: .all, value: "x"))?.contains("takes no") == true)
        #expect(refused(ListQuery(entity: .deal, pageSize: 0))?.contains("page_size") == true)
        #expect(refused(ListQuery(entity: .deal, pageSize: 501))?.contains("page_size") == true)
    }

    @Test func pageTokensOpenOnlyForTheirCallerListAndHour() throws {
        let crm = try TestCRM()
        let keySet = try #require(try crm.changes.keys.inUse())
        let query = ListQuery(entity: .person, index: .company, value: String(repeating: "ab", count: 16))
        let resume = Array(repeating: UInt8(7), count: 40)
        let token = try PageTokens.seal(
            resume, query: query, principal: "crm://client/a", workspace: 1, issuedAtMillis: 1_000_000,
            keySet: keySet)
        func open(
            _ text: String, _ query: ListQuery, _ principal: String = "crm://client/a", now: UInt64 = 1_000_500
        )
            -> Result<[UInt8], RecordError>
        {
            Result {
                try PageTokens.open(
                    text, query: query, principal: principal, workspace: 1, nowMillis: now,
                    keySets: { $0 == keySet.version ? keySet : nil })
            }.mapError { $0 as! RecordError }
        }
        #expect(try open(token, query).get() == resume)
        func isRefused(_ result: Result<[UInt8], RecordError>) -> Bool {
            if case .failure(.badPageToken) = result { return true }
            return false
        }
        #expect(isRefused(open(token, query, "crm://client/b")), "another caller")
        var other = query
        other.filters = ["source": .text("web")]
        #expect(isRefused(open(token, other)), "another list")
        #expect(isRefused(open(token, query, now: 1_000_000 + PageTokens.maxAgeMillis)), "an hour old")
        #expect(isRefused(open(token, query, now: 1_000)), "issued in the future")
        // Every single-character change is refused, as are junk and oversized texts.
        let characters = Array(token)
        for position in stride(from: 3, to: characters.count, by: 7) {
            var altered = characters
            altered[position] = altered[position] == "A" ? "B" : "A"
            #expect(isRefused(open(String(altered), query)))
        }
        for junk in [
            "", "p1.", "p1.!!!!", "p2." + token.dropFirst(3), String(repeating: "A", count: 5000), token + "A",
        ] {
            #expect(isRefused(open(junk, query)))
        }
        #expect(
            PageTokens.bytes(base64URL: Substring(PageTokens.base64URL([0, 1, 2, 250, 251]))) == [0, 1, 2, 250, 251])
    }

    @Test func linksNeedTheLinkedRecordAndMoveTheIndex() throws {
        let crm = try TestCRM()
        let company = try crm.create(.company, ["name": .text("Acme")])
        let person = try crm.create(.person, ["last_name": .text("Lovelace")])
        let deal = try crm.create(.deal, ["name": .text("Big")])
        try crm.apply(try crm.changes.link(try crm.read(.person, person), to: RecordRef(entity: .company, id: company)))
        try crm.apply(try crm.changes.link(try crm.read(.deal, deal), to: RecordRef(entity: .person, id: person)))
        #expect(try every(crm, ListQuery(entity: .person, index: .company, value: "\(company)")) == [person])
        #expect(try every(crm, ListQuery(entity: .deal, index: .contact, value: "\(person)")) == [deal])
        let note = try crm.create(.activity, ["kind": .text("note")])
        try crm.apply(try crm.changes.link(try crm.read(.activity, note), to: RecordRef(entity: .deal, id: deal)))
        try crm.apply(try crm.changes.link(try crm.read(.activity, note), to: RecordRef(entity: .person, id: person)))
        #expect(try every(crm, ListQuery(entity: .activity, index: .target, value: "\(person)")) == [note])
        try crm.apply(try crm.changes.unlink(try crm.read(.activity, note), from: RecordRef(entity: .deal, id: deal)))
        #expect(try every(crm, ListQuery(entity: .activity, index: .target, value: "\(deal)")).isEmpty)
        #expect(throws: RecordError.self) {
            try crm.changes.unlink(try crm.read(.activity, note), from: RecordRef(entity: .deal, id: deal))
        }
        #expect(throws: RecordError.self) {
            try crm.changes.link(try crm.read(.company, company), to: RecordRef(entity: .person, id: person))
        }
        // A link to a record that is gone does not apply.
        let missing = RecordRef(entity: .company, id: try CRMID.random())
        let outcome = try crm.apply(try crm.changes.link(try crm.read(.person, person), to: missing))
        guard case .transaction(.conditionFailed) = outcome else {
            Issue.record("a link to a missing record applied: \(outcome)")
            return
        }
        #expect(try crm.check().isEmpty)
    }

    @Test func afterARotationOldRecordsOpenLookupsFindThemAndNewPersonsUseTheNewSet() throws {
        let crm = try TestCRM()
        let before = try crm.create(.person, ["last_name": .text("Before"), "emails": .texts(["same@example.com"])])
        let v1 = try #require(try crm.changes.keys.inUse())
        try crm.apply(try KeySetChanges.rotation(from: v1, kek: crm.kek.provider).0)
        #expect(try crm.changes.keys.versionInUse() == 2)
        let after = try crm.create(.person, ["last_name": .text("After"), "emails": .texts(["same@example.com"])])
        // Interleave writes with the re-wrap, as a loaded cluster would.
        var batches = 0
        while let (job, version) = try RewrapJob.current(in: crm.state.kv), batches < 10 {
            try crm.apply(try job.nextBatch(jobVersion: version, kv: crm.state.kv, keys: crm.changes.keys))
            _ = try crm.create(.person, ["last_name": .text("During \(batches)")])
            batches += 1
        }
        #expect(try RewrapJob.current(in: crm.state.kv) == nil)
        #expect(try crm.state.kv.crmValue(CRMLayout.keySet(1)) == nil, "version 1 is retired")
        let found = try #require(try crm.changes.lookup(.person, by: .email, value: "SAME@example.com"))
        #expect(Set(found.map(\.record.id)) == [before, after])
        for id in [before, after] {
            let values = try crm.changes.open(try crm.read(.person, id).record, fields: nil)
            #expect(values["emails"] == .texts(["same@example.com"]))
            let wrapped = try #require(try crm.state.kv.crmValue(CRMLayout.subjectKey(workspace: 1, subject: id)))
            #expect(SubjectKeys.version(of: wrapped.payload) == 2)
        }
        #expect(
            try every(crm, ListQuery(entity: .person, index: .owner, value: "crm://client/app")).count == 2 + batches)
        #expect(try crm.check().isEmpty)
    }
}
