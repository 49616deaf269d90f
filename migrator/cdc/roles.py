"""What a change to a table means for the mapped collections: the roles a table plays.

A table can be the root of a collection, a 1:N child embedded as an array, an N:1 parent
embedded as a sub-document (one level, kept element by element) and a node of a deeper tree
(kept by rebuilding, `tree.py`); foreign-key cascades are `cascade.py`'s. The applier asks
these objects for MongoDB operations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from migrator.cdc.cascade import Cascades
from migrator.model.placement import TreeRole, tree_roles
from migrator.model.transform import CollectionPlan, EmbedPlan, Transform


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
class TableRoles:
    roots: list[CollectionPlan] = field(default_factory=list)
    children: list[ChildRole] = field(default_factory=list)
    parents: list[ParentRole] = field(default_factory=list)
    trees: list[TreeRole] = field(default_factory=list)  # nodes of deeper trees (tree.py)


def table_roles(transform: Transform) -> dict[str, TableRoles]:
    roles: dict[str, TableRoles] = {}

    def of(table: str) -> TableRoles:
        return roles.setdefault(table, TableRoles())

    for p in transform.collections:
        of(p.table.name).roots.append(p)
        for e in p.embeds:
            if not e.simple:
                continue  # kept by rebuilding (tree.py)
            t = e.view.table
            if e.many:
                parent_is_pk = sorted(e.parent_columns) == sorted(p.pk)
                match = [c for c in t.primary_key if c not in e.child_columns]
                of(t.name).children.append(ChildRole(p, e, parent_is_pk, match))
            else:
                of(t.name).parents.append(ParentRole(p, e))
    for tr in tree_roles(transform):
        of(tr.node.view.table.name).trees.append(tr)
    # tables whose changes cascade into mapped ones must be read from the stream too
    cascades = Cascades(transform)
    for name in transform.schema.tables:
        if cascades.triggers(name):
            of(name)
    return roles
