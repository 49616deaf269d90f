"""What a change to a table means for the mapped collections: the roles a table plays.

A table can be the root of a collection, a 1:N child embedded as an array, an N:1 parent
embedded as a sub-document, and the parent of foreign keys whose ON DELETE cascades the binlog
never records. The applier asks these objects for MongoDB operations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..mapping import CollectionPlan, EmbedPlan, Transform
from ..source.schema import ForeignKey


@dataclass
class ChildRole:
    """`table` is embedded as an array (`embed.many`) in `plan`'s documents."""

    plan: CollectionPlan
    embed: EmbedPlan
    parent_is_pk: bool  # `on` maps to the root's whole primary key: the parent _id is computable
    match_columns: list[str]  # child key columns that tell elements of one parent apart


@dataclass
class ParentRole:
    """`table` is embedded as a sub-document (N:1) in `plan`'s documents."""

    plan: CollectionPlan
    embed: EmbedPlan


@dataclass
class CascadeRule:
    """A delete of a row of `fk.ref_table` that the server cascades to `fk.table` silently."""

    fk: ForeignKey
    action: str  # CASCADE | SET NULL
    # where fk.table lives in the mapping:
    roots: list[CollectionPlan] = field(default_factory=list)
    children: list[tuple[CollectionPlan, EmbedPlan]] = field(default_factory=list)


@dataclass
class TableRoles:
    roots: list[CollectionPlan] = field(default_factory=list)
    children: list[ChildRole] = field(default_factory=list)
    parents: list[ParentRole] = field(default_factory=list)
    cascades: list[CascadeRule] = field(default_factory=list)


def table_roles(transform: Transform) -> dict[str, TableRoles]:
    roles: dict[str, TableRoles] = {}

    def of(table: str) -> TableRoles:
        return roles.setdefault(table, TableRoles())

    for p in transform.collections:
        of(p.table.name).roots.append(p)
        for e in p.embeds:
            t = e.view.table
            if e.many:
                parent_is_pk = sorted(e.root_columns) == sorted(p.pk)
                match = [c for c in t.primary_key if c not in e.child_columns]
                of(t.name).children.append(ChildRole(p, e, parent_is_pk, match))
            else:
                of(t.name).parents.append(ParentRole(p, e))
    # Cascades: a delete in the referenced table changes rows of mapped child tables.
    for t in transform.schema.tables.values():
        for fk in t.foreign_keys:
            if fk.on_delete not in ("CASCADE", "SET NULL"):
                continue
            rule = CascadeRule(fk=fk, action=fk.on_delete)
            for p in transform.collections:
                if p.table.name == fk.table:
                    rule.roots.append(p)
                for e in p.embeds:
                    if e.many and e.view.table.name == fk.table and p.table.name != fk.ref_table:
                        rule.children.append((p, e))
            if rule.roots or rule.children:
                of(fk.ref_table).cascades.append(rule)
    return roles
