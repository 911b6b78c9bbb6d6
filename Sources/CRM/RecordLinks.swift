import KVStore

/// Links between records: a person's company, a deal's company and point of contact, an
/// activity's targets. A link is a reference field of the linking record (so it moves with the
/// record's version and its index), set only while the linked record exists.
extension RecordChanges {
    /// The standard field of `entity` that links to records of `target`: an activity's targets,
    /// else its one reference field to that entity (custom references are set as fields).
    public func linkField(from entity: EntityCode, to target: EntityCode) throws -> FieldDefinition {
        let definition = EntityCatalog.standard(entity)
        if let targets = definition.fields.first(where: { if case .targets = $0.type { true } else { false } }) {
            return targets
        }
        let references = definition.fields.filter { $0.type == .reference(target) }
        guard let field = references.first, references.count == 1 else {
            throw RecordError.badRequest("a \(entity.name) does not link to a \(target.name)")
        }
        return field
    }

    /// Links the record read at `current` to `target`, if both are unchanged and `target` exists
    /// when the change applies (a reference field is replaced; a target is added once).
    public func link(_ current: VersionedRecord, to target: RecordRef) throws -> Transaction {
        let field = try linkField(from: current.record.entity, to: target.entity)
        let value: FieldValue
        switch (field.type, try open(current.record, fields: [field.name])[field.name]) {
        case (.targets(let maxItems), .targets(let refs)?):
            guard !refs.contains(target) else { return try update(current, set: [:], clear: []) }
            guard refs.count < maxItems else {
                throw RecordError.invalid(FieldError(field: field.name, reason: "holds at most \(maxItems) items"))
            }
            value = .targets(refs + [target])
        case (.targets, _): value = .targets([target])
        default: value = .reference(target.id)
        }
        var transaction = try update(current, set: [field.name: value], clear: [])
        transaction.conditions.append(
            .present(key: CRMLayout.record(workspace: workspace, entity: target.entity, id: target.id)))
        return transaction
    }

    /// Removes the link from the record read at `current` to `target`; refused when there is none.
    public func unlink(_ current: VersionedRecord, from target: RecordRef) throws -> Transaction {
        let field = try linkField(from: current.record.entity, to: target.entity)
        switch try open(current.record, fields: [field.name])[field.name] {
        case .targets(let refs)? where refs.contains(target):
            let rest = refs.filter { $0 != target }
            return try update(
                current, set: rest.isEmpty ? [:] : [field.name: .targets(rest)],
                clear: rest.isEmpty ? [field.name] : [])
        case .reference(let id)? where id == target.id:
            return try update(current, set: [:], clear: [field.name])
        default:
            throw RecordError.badRequest(
                "\(current.record.entity.name) \(current.record.id) is not linked to \(target.entity.name) \(target.id)"
            )
        }
    }
}
