import CRMTestSupport
import ClusterHarness
import Foundation
import Testing

/// The records routes of the front's HTTP/JSON API on real processes: ETags and If-Match, and
/// bad input refused with a clear error and nothing written.
extension RealProcessTests {
    @Suite struct RecordsHTTPProcessTests {
        private func json(_ response: HTTPSRequest.Response) -> [String: Any] {
            (try? JSONSerialization.jsonObject(with: response.body) as? [String: Any]) ?? [:]
        }

        @Test func recordRoutesUseETagsAndRefuseBadInputWritingNothing() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            try await cluster.signInRecordsUser()
            let front = try #require(cluster.ids.first { $0 != leader })

            let created = try await cluster.frontHTTP(
                front, "POST", "/v1/records/person",
                json:
                    #"{"fields": {"last_name": "Hopper", "emails": ["grace@example.com"], "birthday": "1906-12-09"}, "request_id": "h-1"}"#
            )
            #expect(created.status == 201, "\(created.text)")
            let record = json(created)
            let id = try #require(record["id"] as? String)
            let version = try #require(record["version"] as? Int)
            #expect(created.headers["etag"] == "\"\(version)\"")
            #expect((record["fields"] as? [String: Any])?["birthday"] as? String == "1906-12-09")

            let read = try await cluster.frontHTTP(front, "GET", "/v1/records/person/\(id)?fields=last_name")
            #expect(read.status == 200 && read.headers["etag"] == "\"\(version)\"")
            #expect((json(read)["fields"] as? [String: Any])?.keys.sorted() == ["last_name"])

            // Changes need If-Match: none is 428, a stale one 412 with the current ETag.
            let patch = #"{"set": {"city": "Arlington"}}"#
            #expect(try await cluster.frontHTTP(front, "PATCH", "/v1/records/person/\(id)", json: patch).status == 428)
            let updated = try await cluster.frontHTTP(
                front, "PATCH", "/v1/records/person/\(id)", json: patch, headers: [("If-Match", "\"\(version)\"")])
            #expect(updated.status == 200, "\(updated.text)")
            let newVersion = try #require(json(updated)["version"] as? Int)
            let stale = try await cluster.frontHTTP(
                front, "PATCH", "/v1/records/person/\(id)", json: patch, headers: [("If-Match", "\"\(version)\"")])
            #expect(stale.status == 412 && stale.headers["etag"] == "\"\(newVersion)\"", "\(stale.text)")
            for absurd in ["0", "\"-1\"", "18446744073709551615", "abc", "\"\""] {
                let refused = try await cluster.frontHTTP(
                    front, "PATCH", "/v1/records/person/\(id)", json: patch, headers: [("If-Match", absurd)])
                #expect(refused.status == 400, "If-Match \(absurd): \(refused.text)")
            }

            // Bad input: a clear 400 and nothing written.
            let deep = String(repeating: "[", count: 40) + String(repeating: "]", count: 40)
            let bad: [(String, String)] = [
                (#"{"fields": {"nope": "x"}}"#, "no field"),
                (#"{"fields": {"last_name": 5}}"#, "must be a string"),
                (#"{"fields": {"last_name": "a\u0000b"}}"#, "last_name"),
                (#"{"fields": {"emails": ["not-an-email"]}}"#, "e-mail"),
                (#"{"fields": {"last_name": "x", "last_name": "y"}}"#, "twice"),
                (
                    #"{"fields": {"tags": [\#(Array(repeating: "\"t\"", count: 10_000).joined(separator: ","))]}}"#,
                    "at most"
                ),
                (#"{"fields": {"last_name": "\#(String(repeating: "x", count: 1 << 20))"}}"#, ""),
                (#"{"fields": {"employees": 1e3}}"#, ""),
                (#"{"fields": {"birthday": "1906-13-45"}}"#, "date"),
                (#"{"version": 7, "fields": {}}"#, "set by the cluster"),
                (#"{"owner": "crm://client/other"}"#, "set by the cluster"),
                (#"{"fields": {"company_id": "abc"}}"#, "32 hexadecimal"),
                (#"{"fields": {"last_name": "\ud800"}}"#, "surrogate"),
                ("{\"fields\": " + deep + "}", "deeper"),
                ("[1, 2]", "object"),
                (#"{"fields": {"first_name": "x"}} trailing"#, "follows"),
            ]
            for (body, expected) in bad {
                let refused = try await cluster.frontHTTP(front, "POST", "/v1/records/person", json: body)
                #expect(
                    [400, 413].contains(refused.status),
                    "\(body.prefix(80)): \(refused.status) \(refused.text.prefix(200))")
                #expect(
                    expected.isEmpty || refused.text.contains(expected),
                    "\(body.prefix(80)): \(refused.text.prefix(300))")
            }
            let invalidUTF8 = Data(#"{"fields": {"last_name": ""#.utf8) + Data([0xFF, 0xFE]) + Data(#""}}"#.utf8)
            let files = cluster.tls("app")
            let utf8 = try await HTTPSRequest.send(
                port: cluster.addresses(front).frontHTTP.port, method: "POST", path: "/v1/records/person",
                body: invalidUTF8, tls: (files.ca, files.certificate, files.privateKey))
            #expect(utf8.status == 400 && utf8.text.contains("UTF-8"), "\(utf8.text)")
            // Personal values never in URLs: unknown query parameters are refused.
            let query = try await cluster.frontHTTP(front, "GET", "/v1/records/person?email=grace%40example.com")
            #expect(query.status == 400 && !query.text.contains("grace"))
            // Forged page tokens are refused.
            let forged = try await cluster.frontHTTP(front, "GET", "/v1/records/person?page_token=p1.AAAA")
            #expect(forged.status == 400 && forged.text.contains("page token"))

            let listed = try await cluster.frontHTTP(
                front, "POST", "/v1/records/person:list", json: #"{"page_size": 10}"#)
            #expect(listed.status == 200)
            #expect((json(listed)["records"] as? [Any])?.count == 1, "only the one person was written: \(listed.text)")
            let lookup = try await cluster.frontHTTP(
                front, "POST", "/v1/records/person:lookup", json: #"{"by": "email", "value": "GRACE@example.com"}"#)
            #expect((json(lookup)["records"] as? [[String: Any]])?.first?["id"] as? String == id)

            // Trash needs If-Match too, and destroy removes the record.
            let trashed = try await cluster.frontHTTP(
                front, "DELETE", "/v1/records/person/\(id)", headers: [("If-Match", "\"\(newVersion)\"")])
            #expect(trashed.status == 200 && json(trashed)["deleted"] as? Bool == true)
            let trashedVersion = try #require(json(trashed)["version"] as? Int)
            let destroyed = try await cluster.frontHTTP(
                front, "DELETE", "/v1/records/person/\(id)?destroy=true", headers: [("If-Match", "\(trashedVersion)")])
            #expect(destroyed.status == 200, "\(destroyed.text)")
            #expect(try await cluster.frontHTTP(front, "GET", "/v1/records/person/\(id)").status == 404)
        }
    }
}
