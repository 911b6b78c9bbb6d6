import ArgumentParser
import AuditChain
import CRMClient
import CRMProto
import Foundation
import GRPCCore

/// `crmctl audit query|pull|prune`: finding entries, keeping a verified copy on another host,
/// and removing the oldest entries once every collector holds them.
extension Audit {
    struct Query: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Entries that match: by action, actor, record, data subject, outcome and time.",
            discussion:
                "Each member call reads at most 10,000 entries; the search goes on from where it stopped until --limit matches or the end. Times are ISO 8601 (2026-12-01T09:00:00Z) or Unix milliseconds."
        )
        @OptionGroup var options: ConnectionOptions
        @Option(help: "Actions starting with this (login., record.read).") var action: String = ""
        @Option(help: "Exactly this actor (crm://user/<id>).") var actor: String = ""
        @Option(help: "Entries naming this record id.") var record: String = ""
        @Option(help: "Entries naming this data subject id.") var subject: String = ""
        @Option(help: "done, denied or failed.") var outcome: String = ""
        @Option(help: "From this time on.") var since: String?
        @Option(help: "Before this time.") var until: String?
        @Option(help: "Start at this entry.") var from: UInt64 = 1
        @Option(help: "At most this many matches (1 to 100000).") var limit: Int = 100

        func validate() throws {
            guard (1...100_000).contains(limit) else { throw ValidationError("--limit is 1 to 100000") }
            guard outcome.isEmpty || ["done", "denied", "failed"].contains(outcome) else {
                throw ValidationError("--outcome is done, denied or failed")
            }
        }

        func run() async throws {
            var filter = Crm_V1_AuditFilter()
            filter.actionPrefix = action
            filter.actor = actor
            filter.recordID = record
            filter.subjectID = subject
            filter.outcome = outcome
            filter.sinceMs = try since.map(Audit.millis) ?? 0
            filter.untilMs = try until.map(Audit.millis) ?? 0
            let cluster = try Cluster(options)
            defer { cluster.close() }
            var found: [Crm_V1_AuditEntryView] = []
            var next = max(1, from)
            while next != 0, found.count < limit {
                var request = Crm_V1_AuditEntriesRequest()
                request.fromSeq = next
                request.limit = UInt32(min(AuditPage.size, limit - found.count))
                request.filter = filter
                let sent = request
                let page = try await cluster.onAnyMember {
                    try await $0.admin.auditEntries(sent, options: cluster.callOptions)
                }
                found += page.entries
                next = page.nextSeq
            }
            try Audit.printEntries(found, json: options.json)
        }
    }

    enum AuditPage {
        static let size = 1000
    }

    struct Pull: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Keep a verified copy of the trail in a directory, and acknowledge it to the cluster.",
            discussion:
                "Each run re-hashes the local copy, then reads the entries after it from any member, checks that they follow it (hashes, links, checkpoint signatures against the cluster CA), appends and syncs them, and acknowledges the last one to the leader (which compares it with its own). Pruning stays below every collector's acknowledgement. --follow keeps doing so until interrupted, riding out leader changes and unreachable members; a chain that does not follow the copy ends it with status 1."
        )
        @OptionGroup var options: ConnectionOptions
        @Option(help: "The copy's directory (made 0700 when missing).") var to: String
        @Option(help: "This collector's name (1 to 64 of a-z, 0-9, '-', '.', '_').") var collector: String
        @Flag(help: "Keep pulling until interrupted.") var follow = false
        @Option(help: "Milliseconds between rounds with --follow (100 to 60000).") var intervalMs: UInt64 = 1000

        func validate() throws {
            guard (100...60_000).contains(intervalMs) else { throw ValidationError("--interval-ms is 100 to 60000") }
            let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789-._")
            guard (1...64).contains(collector.count), collector.allSatisfy(allowed.contains) else {
                throw ValidationError("--collector is 1 to 64 of a-z, 0-9, '-', '.', '_'")
            }
        }

        func run() async throws {
            let cluster = try Cluster(options)
            defer { cluster.close() }
            var copy = try CollectorCopy.open(URL(fileURLWithPath: to), collector: collector)
            var puller = AuditPuller(
                cluster: cluster, verifier: AuditVerifier(after: copy.last),
                checkpoints: CheckpointChecker(
                    chain: AuditChain.crmChain,
                    caPEM: Array(FileManager.default.contents(atPath: cluster.caFile) ?? Data())))
            repeat {
                do {
                    let pulled = try await puller.round(&copy, collector: collector)
                    Audit.note(
                        "collector \(collector): \(pulled) new, holds \(copy.entries) entries up to \(copy.state.seq); acknowledged"
                    )
                } catch let problem as AuditPuller.ChainProblem {
                    Audit.note("collector \(collector): \(problem.description); the copy was not extended")
                    throw ExitCode(1)
                } catch  where follow {
                    Audit.note("collector \(collector): \(error); trying again")
                }
                if follow { try await Task.sleep(for: .milliseconds(intervalMs)) }
            } while follow
        }
    }

    struct Prune: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove the entries before one (audit.prune and a fresh second factor; signed in).",
            discussion:
                "Only entries every collector acknowledged and checkpoints checked go, at most 10,000 a call (repeated until done); the chain then starts after the last removed entry, and each pruning is an entry itself."
        )
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Option(help: "Remove the entries before this one.") var below: UInt64

        func run() async throws {
            var removed: UInt64 = 0
            var last = Crm_V1_PruneAuditResponse()
            for _ in 0..<10_000 {
                var request = Crm_V1_PruneAuditRequest()
                request.belowSeq = below
                let sent = request
                last = try await signedIn.call(options) { try await $0.directory.pruneAudit(sent, metadata: $1) }
                guard last.toSeq != 0 else { break }
                removed += last.toSeq - last.fromSeq + 1
            }
            if options.json {
                try Output.json(
                    PruneJSON(removed: removed, base_seq: last.baseSeq, allowed_below_seq: last.allowedBelowSeq))
            } else {
                print(
                    "removed \(removed) entries; the chain starts after entry \(last.baseSeq); pruning may go below \(last.allowedBelowSeq) now"
                )
            }
        }
    }

    struct PruneJSON: Encodable {
        let removed: UInt64
        let base_seq: UInt64
        let allowed_below_seq: UInt64
    }

    static func note(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    /// Unix milliseconds, or an ISO 8601 time.
    static func millis(_ text: String) throws -> UInt64 {
        if let millis = UInt64(text) { return millis }
        guard let date = ISO8601DateFormatter().date(from: text), date.timeIntervalSince1970 >= 0 else {
            throw ValidationError("\(text.prefix(64)) is neither Unix milliseconds nor an ISO 8601 time")
        }
        return UInt64(date.timeIntervalSince1970 * 1000)
    }
}

/// One collector's rounds: read what follows the copy from any member, check it, append it,
/// acknowledge it to the leader.
struct AuditPuller {
    let cluster: Cluster
    var verifier: AuditVerifier
    var checkpoints: CheckpointChecker

    struct ChainProblem: Error, CustomStringConvertible {
        let description: String
    }

    /// Pulls up to the head a member reports, a page at a time; answers how many entries came.
    mutating func round(_ copy: inout CollectorCopy, collector: String) async throws -> Int {
        let cluster = self.cluster
        let head = try await cluster.onAnyMember {
            try await $0.admin.auditHead(Crm_V1_AuditHeadRequest(), options: cluster.callOptions)
        }
        if copy.entries == 0, copy.state.seq == 0, head.baseSeq > 0, head.baseHash.count == 32 {
            // A new collector of a pruned trail starts where the trail now starts.
            let base = AuditHead(seq: head.baseSeq, hash: Array(head.baseHash))
            try copy.start(after: base)
            verifier = AuditVerifier(after: base)
        }
        var pulled = 0
        while copy.state.seq < head.seq {
            var request = Crm_V1_AuditEntriesRequest()
            request.fromSeq = copy.state.seq + 1
            request.limit = UInt32(Audit.AuditPage.size)
            let sent = request
            let page = try await cluster.onAnyMember {
                try await $0.admin.auditEntries(sent, options: cluster.callOptions)
            }
            guard !page.entries.isEmpty else { break }
            var verified: [(seq: UInt64, bytes: [UInt8], head: AuditHead)] = []
            for entry in page.entries {
                let link = AuditLink(encoded: Array(entry.stored))
                guard verifier.check(seq: entry.seq, link), let link else {
                    throw ChainProblem(
                        description: verifier.problem.map { "entry \($0.seq): \($0.why)" } ?? "bad entry")
                }
                if let why = checkpoints.check(link) { throw ChainProblem(description: "entry \(entry.seq): \(why)") }
                verified.append((entry.seq, Array(entry.stored), link.head))
            }
            try copy.append(verified)
            pulled += verified.count
        }
        guard copy.state.seq > 0 else { return pulled }
        var acknowledge = Crm_V1_AuditAcknowledgeRequest()
        acknowledge.collector = collector
        acknowledge.seq = copy.last.seq
        acknowledge.hash = .init(copy.last.hash)
        let sent = acknowledge
        _ = try await cluster.onLeader { try await $0.admin.auditAcknowledge(sent, options: cluster.callOptions) }
        return pulled
    }
}
