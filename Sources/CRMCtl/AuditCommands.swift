import ArgumentParser
import AuditChain
import CRMClient
import CRMProto
import Foundation
import GRPCCore

/// `crmctl audit head|tail|verify|query|pull|prune`: the audit trail, read from the members'
/// admin APIs and checked here, from the bytes each member stores (a member's own reading is
/// not trusted).
struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The tamper-evident audit trail (admin API; prune as a signed-in user).",
        subcommands: [Head.self, Tail.self, Verify.self, Query.self, Pull.self, Prune.self])

    struct Head: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Each member's newest entry (number and hash), where the chain starts, and the collectors.")
        @OptionGroup var options: ConnectionOptions
        func run() async throws {
            let cluster = try Cluster(options)
            defer { cluster.close() }
            var rows: [[String]] = []
            var heads: [HeadJSON] = []
            var unreachable: [String] = []
            for index in cluster.targets.indices {
                let head: Crm_V1_AuditHeadResponse
                do {
                    head = try await cluster.onTarget(index) {
                        try await $0.admin.auditHead(Crm_V1_AuditHeadRequest(), options: cluster.callOptions)
                    }
                } catch let failure as Failure where failure.exitCode == 4 {
                    // One member down does not hide the others' heads.
                    unreachable.append(failure.description)
                    Audit.note("member \(cluster.targets[index].id) did not answer")
                    continue
                }
                let hash = Audit.hex(Array(head.hash))
                heads.append(
                    HeadJSON(
                        member: cluster.targets[index].id, seq: head.seq, hash: hash, applied_index: head.appliedIndex,
                        base_seq: head.baseSeq, checked_seq: head.checkedSeq,
                        collectors: head.collectors.map {
                            CollectorJSON(name: $0.name, seq: $0.seq, acknowledged_at_ms: $0.acknowledgedAtMs)
                        }))
                rows.append([
                    "\(cluster.targets[index].id)", "\(head.seq)", hash, "\(head.appliedIndex)", "\(head.baseSeq)",
                    "\(head.checkedSeq)",
                    head.collectors.map { "\($0.name)@\($0.seq)" }.joined(separator: " "),
                ])
            }
            guard !heads.isEmpty else { throw Failure.unreachable(unreachable) }
            if options.json {
                try Output.json(heads)
            } else {
                Output.table(["MEMBER", "SEQ", "HASH", "APPLIED", "BASE", "CHECKED", "COLLECTORS"], rows)
            }
        }
    }

    struct Tail: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The newest entries, read for people.")
        @OptionGroup var options: ConnectionOptions
        @Option(name: .customShort("n"), help: "How many (1 to 1000).") var count: UInt32 = 20
        func validate() throws {
            guard (1...1000).contains(count) else { throw ValidationError("-n is 1 to 1000") }
        }
        func run() async throws {
            let cluster = try Cluster(options)
            defer { cluster.close() }
            let wanted = UInt64(count)
            let entries = try await cluster.onAnyMember { member in
                let head = try await member.admin.auditHead(Crm_V1_AuditHeadRequest(), options: cluster.callOptions)
                var request = Crm_V1_AuditEntriesRequest()
                request.fromSeq = head.seq > wanted ? head.seq - wanted + 1 : 1
                request.limit = UInt32(wanted)
                return try await member.admin.auditEntries(request, options: cluster.callOptions).entries
            }
            try Audit.printEntries(entries, json: options.json)
        }
    }

    static func printEntries(_ entries: [Crm_V1_AuditEntryView], json: Bool) throws {
        if json {
            try Output.json(entries.map(EntryJSON.init))
            return
        }
        Output.table(
            ["SEQ", "TIME", "ACTION", "OUTCOME", "ACTOR", "APPLICATION", "RECORDS", "REASON"],
            entries.map {
                [
                    "\($0.seq)", Audit.time($0.logTimeMs), $0.action, $0.outcome, $0.actor, $0.application,
                    ($0.entity.isEmpty ? "" : $0.entity + " ") + $0.recordIds.joined(separator: ","), $0.reason,
                ]
            })
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-hash every entry and check numbering, links and the head; exit 1 naming the first bad entry.",
            discussion:
                "Entries are read as stored. With --all-members each member's chain is checked and the members must hold the same entries up to the shortest head. --anchors takes heads saved earlier (the JSON `crmctl audit head --json` prints): each entry named there must still have the hash saved."
        )
        @OptionGroup var options: ConnectionOptions
        @Flag(help: "Check every member's copy, and that they agree.") var allMembers = false
        @Option(help: "Start at this entry, trusting the one before it (default: the first).") var from: UInt64 = 1
        @Option(help: "A file of heads saved earlier, to check that those entries are unchanged.") var anchors: String?
        func validate() throws {
            guard from >= 1 else { throw ValidationError("--from starts at 1") }
        }
        func run() async throws {
            let cluster = try Cluster(options)
            defer { cluster.close() }
            let saved = try anchors.map(Audit.anchors) ?? []
            let indexes = allMembers ? Array(cluster.targets.indices) : [try await Audit.answering(cluster)]
            var results: [VerifyJSON] = []
            for index in indexes {
                var result = try await Audit.verify(cluster, index, from: from)
                if result.problem == nil {
                    result.problem = try await Audit.anchorProblem(
                        saved, head: result.head, base: result.base, cluster, index)
                }
                results.append(result)
            }
            if results.count > 1, results.allSatisfy({ $0.problem == nil }) {
                let shortest = results.min { $0.last_seq < $1.last_seq }!
                for index in indexes where shortest.last_seq >= from {
                    let hash = try await Audit.hash(of: shortest.last_seq, cluster, index)
                    if hash != shortest.head_hash {
                        results[indexes.firstIndex(of: index)!].problem =
                            "entry \(shortest.last_seq) differs from member \(shortest.member)'s: the chains diverge"
                    }
                }
            }
            if options.json {
                try Output.json(results)
            } else {
                Output.table(
                    ["MEMBER", "ENTRIES", "CHECKPOINTS", "HEAD", "RESULT"],
                    results.map {
                        ["\($0.member)", "\($0.checked)", "\($0.checkpoints)", "\($0.head)", $0.problem ?? "ok"]
                    })
            }
            if results.contains(where: { $0.problem != nil }) { throw ExitCode(1) }
        }
    }

    /// The first member that answers a head request.
    static func answering(_ cluster: Cluster) async throws -> Int {
        for index in cluster.targets.indices {
            if (try? await cluster.connection(index).admin.auditHead(
                Crm_V1_AuditHeadRequest(), options: cluster.callOptions)) != nil
            {
                return index
            }
        }
        throw Failure.unreachable(cluster.targets.map { $0.address(.admin) })
    }

    /// Checks member `index`'s chain from entry `from` to its head, page by page.
    static func verify(_ cluster: Cluster, _ index: Int, from: UInt64) async throws -> VerifyJSON {
        let head = try await cluster.onTarget(index) {
            try await $0.admin.auditHead(Crm_V1_AuditHeadRequest(), options: cluster.callOptions)
        }
        var base = AuditHead.empty
        var from = from
        if head.baseSeq > 0, head.baseHash.count == 32, from <= head.baseSeq + 1 {
            // Pruned: the chain starts after the base, whose hash the trail keeps.
            base = AuditHead(seq: head.baseSeq, hash: Array(head.baseHash))
            from = head.baseSeq + 1
        } else if from > 1 {
            guard let before = try await link(from - 1, cluster, index) else {
                return VerifyJSON(
                    member: cluster.targets[index].id, checked: 0, last_seq: 0, head: head.seq,
                    head_hash: hex(AuditChain.genesis), problem: "entry \(from - 1) (before --from) is missing")
            }
            base = before.head
        }
        var verifier = AuditVerifier(after: base)
        var checkpoints = CheckpointChecker(
            chain: AuditChain.crmChain,
            caPEM: Array(FileManager.default.contents(atPath: cluster.caFile) ?? Data()))
        var checkpointProblem: String?
        var next = from
        while next != 0, verifier.problem == nil {
            var request = Crm_V1_AuditEntriesRequest()
            request.fromSeq = next
            request.limit = 1000
            let sent = request
            let page = try await cluster.onTarget(index) {
                try await $0.admin.auditEntries(sent, options: cluster.callOptions)
            }
            for entry in page.entries {
                let link = AuditLink(encoded: Array(entry.stored))
                guard verifier.check(seq: entry.seq, link), let link else { break }
                if let why = checkpoints.check(link) {
                    checkpointProblem = "entry \(entry.seq): \(why)"
                    break
                }
            }
            if checkpointProblem != nil { break }
            next = page.nextSeq
        }
        var problem = verifier.problem.map { "entry \($0.seq): \($0.why)" } ?? checkpointProblem
        if problem == nil, head.hash.count == 32 {
            verifier.finish(at: AuditHead(seq: head.seq, hash: Array(head.hash)))
            problem = verifier.problem.map { "entry \($0.seq): \($0.why)" }
        } else if problem == nil {
            problem = "the head does not decode"
        }
        return VerifyJSON(
            member: cluster.targets[index].id, checked: verifier.checked, last_seq: verifier.last.seq, head: head.seq,
            base: head.baseSeq, head_hash: hex(verifier.last.hash), checkpoints: checkpoints.verified, problem: problem)
    }

    /// Entry `seq` on member `index` as stored (nil: missing or not decodable).
    static func link(_ seq: UInt64, _ cluster: Cluster, _ index: Int) async throws -> AuditLink? {
        var request = Crm_V1_AuditEntriesRequest()
        request.fromSeq = seq
        request.limit = 1
        let sent = request
        let page = try await cluster.onTarget(index) {
            try await $0.admin.auditEntries(sent, options: cluster.callOptions)
        }
        guard let first = page.entries.first, first.seq == seq else { return nil }
        return AuditLink(encoded: Array(first.stored))
    }

    /// The hash of entry `seq` on member `index` (the genesis hash for 0).
    static func hash(of seq: UInt64, _ cluster: Cluster, _ index: Int) async throws -> String {
        guard seq > 0 else { return hex(AuditChain.genesis) }
        return try await link(seq, cluster, index).map { hex($0.hash) } ?? "missing"
    }

    struct Anchor: Decodable {
        let seq: UInt64
        let hash: String
    }

    /// Heads saved earlier: a JSON array, or one JSON object a line.
    static func anchors(_ path: String) throws -> [Anchor] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        if let list = try? JSONDecoder().decode([Anchor].self, from: data) { return list }
        return try String(decoding: data, as: UTF8.self).split(separator: "\n").filter { !$0.isEmpty }.map {
            do { return try JSONDecoder().decode(Anchor.self, from: Data($0.utf8)) } catch {
                throw ValidationError("\(path): each anchor is {\"seq\": N, \"hash\": \"<hex>\"}")
            }
        }
    }

    /// The first saved anchor member `index` no longer matches (nil: all hold).
    static func anchorProblem(
        _ anchors: [Anchor], head: UInt64, base: UInt64, _ cluster: Cluster, _ index: Int
    ) async throws -> String? {
        // Entries before the base were pruned (only below every collector's copy): an anchor
        // there is the collectors' to check.
        for anchor in anchors.sorted(by: { $0.seq < $1.seq }) where anchor.seq > base {
            guard anchor.seq <= head else {
                return "the chain ends at \(head), before the anchor at entry \(anchor.seq): entries were removed"
            }
            if try await hash(of: anchor.seq, cluster, index) != anchor.hash.lowercased() {
                return "entry \(anchor.seq) no longer has the hash saved in the anchors: the chain was rewritten"
            }
        }
        return nil
    }

    static func hex(_ bytes: [UInt8]) -> String { AuditChain.hex(bytes) }

    static func time(_ millis: UInt64) -> String {
        ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(millis) / 1000))
    }

    struct HeadJSON: Encodable {
        let member: UInt64
        let seq: UInt64
        let hash: String
        let applied_index: UInt64
        let base_seq: UInt64
        let checked_seq: UInt64
        let collectors: [CollectorJSON]
    }

    struct CollectorJSON: Encodable {
        let name: String
        let seq: UInt64
        let acknowledged_at_ms: UInt64
    }

    struct VerifyJSON: Encodable {
        let member: UInt64
        let checked: Int
        /// The last entry that held (0: none).
        let last_seq: UInt64
        let head: UInt64
        /// Where the chain starts after (pruned up to it; 0: not pruned).
        var base: UInt64 = 0
        /// The hash of the last entry that held (compared across members at the shortest chain).
        var head_hash: String
        /// Checkpoints whose signature, certificate and hash held.
        var checkpoints: Int = 0
        var problem: String?
    }

    struct EntryJSON: Encodable {
        let seq: UInt64
        let time_ms: UInt64
        let action: String
        let outcome: String
        let actor: String
        let application: String
        let entity: String
        let record_ids: [String]
        let subject_ids: [String]
        let field_ids: [UInt32]
        let request_id: String
        let reason: String
        let value_digests: [String]

        init(_ view: Crm_V1_AuditEntryView) {
            seq = view.seq
            time_ms = view.logTimeMs
            action = view.action
            outcome = view.outcome
            actor = view.actor
            application = view.application
            entity = view.entity
            record_ids = view.recordIds
            subject_ids = view.subjectIds
            field_ids = view.fieldIds
            request_id = view.requestID
            reason = view.reason
            value_digests = view.valueDigests
        }
    }
}
