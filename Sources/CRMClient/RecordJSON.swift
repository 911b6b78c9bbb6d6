import CRMProto
import Foundation

/// Records as JSON objects (for `crmctl --json` and the front's HTTP API): each field value in
/// its natural JSON form — texts as strings, lists as arrays, money as `{micros, currency}`,
/// dates as `YYYY-MM-DD`, timestamps as milliseconds, references as ids, targets as
/// `{entity, id}`.
public enum RecordJSON {
    public static func object(_ record: Crm_V1_Record) -> [String: Any] {
        [
            "entity": record.entity, "id": record.id, "version": record.version,
            "updated_at_millis": record.updatedAtMillis, "created_at_millis": record.createdAtMillis,
            "owner": record.owner, "teams": record.teams, "deleted": record.deleted,
            "fields": record.fields.mapValues(value),
        ]
    }

    /// An entity's fields as `Describe` gives them.
    public static func object(_ described: Crm_V1_DescribeResponse) -> [String: Any] {
        [
            "entity": described.entity,
            "fields": described.fields.map {
                [
                    "name": $0.name, "type": $0.type, "personal": $0.personal, "purpose": $0.purpose,
                    "lookup": $0.lookup, "index": $0.index, "custom": $0.custom, "tracked": $0.tracked,
                ] as [String: Any]
            },
        ]
    }

    /// A record's field history, newest first: each change with its old and new value (absent
    /// where the field had none, or was cleared).
    public static func object(_ history: Crm_V1_HistoryResponse) -> [String: Any] {
        [
            "items": history.items.map { item in
                [
                    "time_ms": item.timeMs, "actor": item.actor,
                    "changes": item.changes.map { change in
                        var object: [String: Any] = ["field": change.field]
                        if change.hasOldValue { object["old"] = value(change.oldValue) }
                        if change.hasNewValue { object["new"] = value(change.newValue) }
                        return object
                    },
                ] as [String: Any]
            }
        ]
    }

    /// A security alert as `ListAlerts` gives it (ids and names, never a personal value).
    public static func object(_ alert: Crm_V1_AlertInfo) -> [String: Any] {
        [
            "cursor": alert.cursor, "kind": alert.kind, "time_ms": alert.timeMs, "user_id": alert.userID,
            "application": alert.application, "detail": alert.detail,
        ]
    }

    public static func value(_ value: Crm_V1_FieldValue) -> Any {
        switch value.kind {
        case .text(let text)?: return text
        case .texts(let list)?: return list.items
        case .integer(let number)?: return number
        case .money(let money)?: return ["micros": money.micros, "currency": money.currency] as [String: Any]
        case .date(let date)?: return String(format: "%04u-%02u-%02u", date.year, date.month, date.day)
        case .timestampMillis(let millis)?: return millis
        case .boolean(let flag)?: return flag
        case .reference(let id)?: return id
        case .references(let list)?: return list.ids
        case .targets(let list)?: return list.items.map { ["entity": $0.entity, "id": $0.id] }
        case nil: return NSNull()
        }
    }

    /// Sorted-key JSON text of `object`, a single value included (`pretty`: indented, for people).
    public static func data(_ object: Any, pretty: Bool = false) throws -> Data {
        var options: JSONSerialization.WritingOptions = [.sortedKeys, .withoutEscapingSlashes, .fragmentsAllowed]
        if pretty { options.insert(.prettyPrinted) }
        return try JSONSerialization.data(withJSONObject: object, options: options)
    }
}
