import CRM
import Foundation
import Testing

@testable import Node

@Suite struct StrictJSONTests {
    private func parse(_ text: String) -> Result<JSONValue, StrictJSON.Failure> {
        Result { try StrictJSON.parse(Data(text.utf8)) }.mapError { $0 as! StrictJSON.Failure }
    }

    @Test func acceptsStrictJSON() throws {
        #expect(
            try parse(#" {"a": [1, -2, true, false, null, "x\u00e9\ud83d\ude00\n"], "b": {}} "#).get()
                == .object([
                    "a": .array([.integer(1), .integer(-2), .bool(true), .bool(false), .null, .string("xé😀\n")]),
                    "b": .object([:]),
                ]))
        #expect(try parse("-9223372036854775808").get() == .integer(.min))
        #expect(try parse("9223372036854775807").get() == .integer(.max))
    }

    @Test func refusesWhatIsNotStrictJSONByRuleAndOffsetWithoutEchoingIt() {
        let cases: [(String, String)] = [
            (#"{"k": 1, "k": 2}"#, "twice"), ("9223372036854775808", "64 bits"), ("-9223372036854775809", "64 bits"),
            ("1.5", "integers"), ("1e3", "integers"), ("01", "not a JSON number"), (#""\ud800""#, "surrogate"),
            (#""\udc00""#, "surrogate"), ("\"a\u{01}\"", "control"), (#""\x""#, "escape"), ("[1,]", "value"),
            ("{\"a\" 1}", "`:`"), ("[1] [2]", "follows"), ("", "ends early"), ("[", "ends early"),
            ("\"secret", "does not end"), ("tru", "value"),
            (String(repeating: "[", count: 17) + String(repeating: "]", count: 17), "deeper"),
        ]
        for (text, reason) in cases {
            switch parse(text) {
            case .success(let value): Issue.record("\(text) parsed as \(value)")
            case .failure(let failure):
                #expect(failure.description.contains(reason), "\(text): \(failure)")
                #expect(!failure.description.contains("secret"))
            }
        }
        var invalid = Array("\"ab".utf8)
        invalid += [0xC3, 0x28, 0x22]
        #expect(throws: StrictJSON.Failure.self) { try StrictJSON.parse(Data(invalid)) }
    }

    @Test func fieldValuesAreTypedByTheirDefinitions() throws {
        let person = EntityCatalog.standard(.person)
        let fields = try FrontRecordsHTTP.fields(
            .object([
                "birthday": .string("1906-12-09"), "emails": .array([.string("a@example.com")]),
                "do_not_contact": .bool(true),
            ]), person, "fields")
        #expect(fields["birthday"]?.date.year == 1906 && fields["birthday"]?.date.day == 9)
        #expect(fields["emails"]?.texts.items == ["a@example.com"])
        #expect(fields["do_not_contact"]?.boolean == true)
        for (name, value) in [
            ("birthday", JSONValue.string("12/09/1906")), ("do_not_contact", .integer(1)), ("emails", .string("a")),
            ("company_id", .integer(3)), ("nope", .null),
        ] {
            #expect(throws: (any Error).self, "\(name)") {
                try FrontRecordsHTTP.fields(.object([name: value]), person, "fields")
            }
        }
        #expect(try FrontRecordsHTTP.expectedVersion("\"42\"") == 42)
        for header in ["0", "\"\"", "-1", "1.0", "99999999999999999999", "W/\"3\""] {
            #expect(throws: (any Error).self, "\(header)") { try FrontRecordsHTTP.expectedVersion(header) }
        }
        #expect(throws: FrontRecordsHTTP.PreconditionRequired.self) { try FrontRecordsHTTP.expectedVersion(nil) }
    }
}
