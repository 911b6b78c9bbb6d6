import BinaryCoding
import KVStore

/// The CRM state's own consistency, as `crmctl crm check` reports it: every record's index
/// entries exist, every index entry belongs to a record that lists it, every record has its
/// update-time entry, every person has its subject key, and no subject key is left without a
/// record that uses it (except the workspace's own), and every team a record (or user) belongs
/// to exists.
public struct CRMCheck: Sendable {
    public struct Report: Equatable, Sendable {
        public var records = 0
        public var indexEntries = 0
        public var subjectKeys = 0
        /// What does not hold, by record and index ids (never values).
        public var problems: [String] = []
    }

    let kv: ReplicatedKV
    let workspace: UInt32

    public init(kv: ReplicatedKV, workspace: UInt32 = CRMLayout.defaultWorkspace) {
        self.kv = kv
        self.workspace = workspace
    }

    public func run(maxProblems: Int = 100) throws -> Report {
        var report = Report()
        func problem(_ text: String) { if report.problems.count < maxProblems { report.problems.append(text) } }
        var listed = Set<[UInt8]>()
        var updated = Set<[UInt8]>()
        var subjectsInUse = Set<CRMID>()
        var teamsFound: [CRMID: Bool] = [:]
        for entity in EntityCode.allCases {
            for (key, value) in try all(CRMLayout.recordPrefix(workspace: workspace, entity: entity)) {
                report.records += 1
                guard let record = StoredRecord(encoded: value.payload), let version = value.version,
                    key == CRMLayout.record(workspace: workspace, entity: entity, id: record.id)
                else {
                    problem("a \(entity.name) record does not decode")
                    continue
                }
                _ = version
                listed.formUnion(record.indexKeys)
                for team in record.teams {
                    if teamsFound[team] == nil {
                        teamsFound[team] = try kv.crmValue(CRMLayout.team(workspace: workspace, id: team)) != nil
                    }
                    if teamsFound[team] == false {
                        problem("\(entity.name) \(record.id) names team \(team), which does not exist")
                    }
                }
                for index in record.indexKeys where try kv.crmValue(index) == nil {
                    problem("\(entity.name) \(record.id) lacks an index entry (\(Self.indexCode(index, workspace)))")
                }
                var writer = BinaryWriter()
                writer.raw(CRMLayout.updatedPrefix(workspace: workspace))
                writer.u64(value.updatedAtMillis)
                writer.raw(CRMLayout.recordSuffix(entity, record.id))
                updated.insert(writer.bytes)
                if let subject = record.subject {
                    subjectsInUse.insert(subject)
                    if try kv.crmValue(CRMLayout.subjectKey(workspace: workspace, subject: subject)) == nil {
                        problem("\(entity.name) \(record.id) has no subject key (subject \(subject))")
                    }
                }
            }
        }
        let indexPrefix = CRMLayout.bigEndian(workspace) + Array("/x/".utf8)
        for (key, _) in try all(indexPrefix) {
            report.indexEntries += 1
            if key.starts(with: CRMLayout.updatedPrefix(workspace: workspace)) {
                if !updated.contains(key) { problem("an update-time entry names no record at that time") }
            } else if !listed.contains(key) {
                problem("an index entry (\(Self.indexCode(key, workspace))) belongs to no record")
            }
        }
        for updatedKey in updated where try kv.crmValue(updatedKey) == nil {
            problem("a record lacks its update-time entry")
        }
        for (key, _) in try all(CRMLayout.vaultPrefix(workspace: workspace)) {
            report.subjectKeys += 1
            guard let subject = CRMID(bytes: Array(key.suffix(CRMID.byteCount))) else {
                problem("a subject key entry does not decode")
                continue
            }
            if subject != CRMLayout.workspaceSubject && !subjectsInUse.contains(subject) {
                problem("subject \(subject)'s key is used by no record")
            }
        }
        return report
    }

    private static func indexCode(_ key: [UInt8], _ workspace: UInt32) -> String {
        let start = CRMLayout.bigEndian(workspace).count + 3
        guard key.count >= start + 2 else { return "?" }
        return String(decoding: key[start..<(start + 2)], as: UTF8.self)
    }

    /// Every entry under `prefix`, a page at a time.
    private func all(_ prefix: [UInt8]) throws -> [([UInt8], CRMValue)] {
        var entries: [([UInt8], CRMValue)] = []
        var from = prefix
        let to = CRMLayout.end(of: prefix)
        while true {
            let page = try kv.crmScan(from: from, to: to, limit: 1024)
            entries += page.entries.map { ($0.key, $0.value) }
            guard page.more, let last = page.entries.last else { return entries }
            from = last.key + [0]
        }
    }
}
