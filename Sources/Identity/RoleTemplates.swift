import CRM

/// Roles to start from, each within the separation of duties: an organisation copies and edits
/// them (`crmctl roles put`).
public enum RoleTemplates {
    public static let yaml: [String: String] = [
        "security-admin": """
        name: security-admin
        permissions: [user.admin, role.admin, audit.read]
        """,
        "auditor": """
        name: auditor
        permissions: [audit.read]
        """,
        "privacy-officer": """
        name: privacy-officer
        objects:
          person: {read: all}
          company: {read: all}
          deal: {read: all}
          activity: {read: all}
        fields:
          person: {first_name: read, last_name: read, emails: read, phones: read, job_title: read, city: read,
                   address: read, linkedin: read, avatar_url: read, birthday: read}
          activity: {title: read, body: read}
        permissions: [export, privacy.erase, privacy.approve, restricted.read, history.read, audit.read]
        conditions: {mfa: required}
        """,
        "sales-manager": """
        name: sales-manager
        objects:
          person: {create: true, read: all, update: team, delete: team}
          company: {create: true, read: all, update: team, delete: team}
          deal: {create: true, read: all, update: team, delete: team}
          activity: {create: true, read: team, update: team, delete: team}
        fields:
          person: {first_name: edit, last_name: edit, emails: edit, phones: edit, job_title: edit, city: edit,
                   linkedin: edit}
          activity: {title: edit, body: edit}
        permissions: [history.read]
        conditions: {mfa: required}
        """,
        "sales-rep": """
        name: sales-rep
        objects:
          person: {create: true, read: team, update: own, delete: own}
          company: {create: true, read: all, update: own}
          deal: {create: true, read: team, update: own, delete: own}
          activity: {create: true, read: own, update: own, delete: own}
        fields:
          person: {first_name: edit, last_name: edit, emails: edit, phones: read, job_title: edit}
          activity: {title: edit, body: edit}
        """,
        "analyst": """
        name: analyst
        objects:
          person: {read: all}
          company: {read: all}
          deal: {read: all}
        permissions: [analytics.export]
        """,
        "integration-readonly": """
        name: integration-readonly
        objects:
          person: {read: all}
          company: {read: all}
          deal: {read: all}
          activity: {read: all}
        """,
    ]

    public static func role(_ name: String) throws -> CRMRole {
        guard let text = yaml[name] else { throw RoleError("no role template `\(name.prefix(64))`") }
        return try CRMRole.parse(yaml: text)
    }
}
