"""Foreign-key cascades the binlog never carries: which documents they change, to any depth.

When MySQL deletes a parent row or changes its referenced key, InnoDB changes the child rows
itself (ON DELETE CASCADE / SET NULL, ON UPDATE CASCADE / SET NULL) and writes nothing of it to
the binlog. An `Effect` describes such a change as MySQL applied it: "the rows of T whose
columns equal `cond` were deleted" or "... had `changes` applied". For every place T lives in
the mapping (a collection's root, array elements, a sub-document) the applier finds the
documents holding those rows (discovery, by the mapped fields) and rebuilds them from the source
(`rebuild.py`); effects then propagate along the foreign keys that reference T, by the key
values MySQL matched on. Where the documents cannot be found (a foreign-key column not mapped,
an unmapped table in the middle of a chain that needs its keys), `problems()` says so and
`plan` blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from migrator.model.events import ChangeEvent
from migrator.model.placement import TreeRole, findable_in_documents, held_columns
from migrator.model.placement import locate as tree_locate
from migrator.model.schema import ForeignKey
from migrator.model.transform import CollectionPlan, EmbedPlan, Transform

Kind = Literal["delete", "update"]
ACTIONS = ("CASCADE", "SET NULL")
MAX_DEPTH = 64


@dataclass(frozen=True)
class Rule:
    """A foreign key whose action on `on` (delete | update) the server applies silently."""

    fk: ForeignKey
    on: Kind
    action: str  # CASCADE | SET NULL

    def describe(self) -> str:
        return (
            f"{self.fk.table}.{self.fk.name} ({', '.join(self.fk.columns)} -> "
            f"{self.fk.ref_table}) ON {self.on.upper()} {self.action}"
        )


@dataclass(frozen=True)
class Place:
    """Where a table's rows live in the documents."""

    kind: Literal["root", "element", "subdoc", "nested"]
    plan: CollectionPlan
    embed: EmbedPlan | None = None
    chain: tuple[EmbedPlan, ...] = ()  # nested: the top-level embed down to `embed`

    def columns(self) -> list[str]:
        return self.plan.root.columns if self.embed is None else self.embed.view.columns

    def describe(self) -> str:
        if self.embed is None:
            return f"collection {self.plan.name!r}"
        if self.kind == "nested":
            return f"{self.plan.name}.{'.'.join(e.name for e in self.chain)} (nested)"
        what = "array" if self.kind == "element" else "sub-document"
        return f"{self.plan.name}.{self.embed.name} ({what})"


@dataclass
class Effect:
    table: str
    cond: dict[str, Any]  # column -> source value the affected rows had
    kind: Kind
    changes: dict[str, Any] = field(default_factory=dict)  # update: column -> new value
    rule: Rule | None = None
    trigger: str | None = None  # level 1: the table whose event caused it
    depth: int = 1

    def key(self) -> tuple[Any, ...]:
        return (self.table, self.kind, tuple(sorted((k, repr(v)) for k, v in self.cond.items())))


class Cascades:
    def __init__(self, transform: Transform) -> None:
        self.transform = transform
        self.rules: dict[str, list[Rule]] = {}  # by referenced table
        for t in transform.schema.tables.values():
            for fk in t.foreign_keys:
                if fk.on_delete in ACTIONS:
                    self.rules.setdefault(fk.ref_table, []).append(Rule(fk, "delete", fk.on_delete))
                if fk.on_update in ACTIONS:
                    self.rules.setdefault(fk.ref_table, []).append(Rule(fk, "update", fk.on_update))
        self.places: dict[str, list[Place]] = {}
        for p in transform.collections:
            self.places.setdefault(p.table.name, []).append(Place("root", p))
            for chain in p.chains():
                e = chain[-1]
                if not chain[0].simple:
                    self.places.setdefault(e.view.table.name, []).append(
                        Place("nested", p, e, chain)
                    )
                    continue
                kind: Literal["element", "subdoc"] = "element" if e.many else "subdoc"
                self.places.setdefault(e.view.table.name, []).append(Place(kind, p, e))
        # tables whose rows, or whose cascade descendants' rows, are in some document
        self.relevant: set[str] = set(self.places)
        grew = True
        while grew:
            grew = False
            for ref, rules in self.rules.items():
                if ref not in self.relevant and any(r.fk.table in self.relevant for r in rules):
                    self.relevant.add(ref)
                    grew = True

    def triggers(self, table: str) -> bool:
        return any(r.fk.table in self.relevant for r in self.rules.get(table, ()))

    # -- effects ------------------------------------------------------------------------------
    def effects_of(self, ev: ChangeEvent) -> list[Effect]:
        """Level-1 effects of a change of a referenced row."""
        out: list[Effect] = []
        for rule in self.rules.get(ev.table, ()):
            fk = rule.fk
            if fk.table not in self.relevant or ev.before is None:
                continue
            old = [ev.before.get(c) for c in fk.ref_columns]
            if any(v is None for v in old):
                continue  # NULL references nothing
            cond = dict(zip(fk.columns, old, strict=True))
            if ev.after is None and rule.on == "delete":
                if rule.action == "CASCADE":
                    out.append(Effect(fk.table, cond, "delete", rule=rule, trigger=ev.table))
                else:
                    nulls = dict.fromkeys(fk.columns)
                    out.append(Effect(fk.table, cond, "update", nulls, rule, ev.table))
            elif ev.after is not None and rule.on == "update":
                new = [ev.after.get(c) for c in fk.ref_columns]
                if new == old:
                    continue
                changes = (
                    dict(zip(fk.columns, new, strict=True))
                    if rule.action == "CASCADE"
                    else dict.fromkeys(fk.columns)
                )
                out.append(Effect(fk.table, cond, "update", changes, rule, ev.table))
        return out

    def follow(
        self, eff: Effect, rows: list[dict[str, Any]] | None, derived: list[Rule] | None = None
    ) -> tuple[list[Effect], list[str]]:
        """The effects `eff` has on the tables referencing its table; `rows` are the affected
        rows' values where discovery found them (needed when a child references columns the
        effect's condition does not fix). Rules followed through such rows go to `derived`."""
        out: list[Effect] = []
        problems: list[str] = []
        derived = [] if derived is None else derived
        if eff.depth >= MAX_DEPTH:
            return out, [f"cascade deeper than {MAX_DEPTH} levels from {eff.table}"]
        for rule in self.rules.get(eff.table, ()):
            fk = rule.fk
            if fk.table not in self.relevant:
                continue
            if eff.kind == "delete" and rule.on != "delete":
                continue
            if eff.kind == "update" and (
                rule.on != "update" or not set(fk.ref_columns) & set(eff.changes)
            ):
                continue
            pairs = list(zip(fk.columns, fk.ref_columns, strict=True))
            known = [(c, r) for c, r in pairs if r in eff.cond]
            if known:
                # every referencing row matches on these columns (referential integrity)
                conds = [{c: eff.cond[r] for c, r in known}]
            elif rows is None:
                problems.append(
                    f"{rule.describe()}: the keys of the {eff.table} rows it follows are not "
                    f"in any document (map {eff.table} with {', '.join(fk.ref_columns)})"
                )
                continue
            else:
                # derived from rows the documents held: documents newer than this event (a
                # snapshot copied later, a rebuild) may no longer hold them, so the rule also
                # gets a sweep for references left dangling (see Applier.sweep_dangling)
                derived.append(rule)
                seen: set[tuple[Any, ...]] = set()
                conds = []
                for row in rows:
                    vals = tuple(row.get(r) for _c, r in pairs)
                    if any(v is None for v in vals) or vals in seen:
                        continue
                    seen.add(vals)
                    conds.append({c: row.get(r) for c, r in pairs})
            for cond in conds:
                if any(v is None for v in cond.values()):
                    continue
                if eff.kind == "delete" and rule.action == "CASCADE":
                    out.append(Effect(fk.table, cond, "delete", rule=rule, depth=eff.depth + 1))
                elif rule.action == "SET NULL":
                    nulls = dict.fromkeys(fk.columns)
                    out.append(Effect(fk.table, cond, "update", nulls, rule, None, eff.depth + 1))
                else:  # ON UPDATE CASCADE: the referencing columns take the new values
                    changes = {c: eff.changes[r] for c, r in pairs if r in eff.changes}
                    out.append(Effect(fk.table, cond, "update", changes, rule, None, eff.depth + 1))
        return out, problems

    def needs_rows(self, eff: Effect) -> list[str]:
        """Columns of `eff.table` discovery must read for `follow` (delete chains whose next
        foreign key references columns the condition does not fix)."""
        cols: list[str] = []
        if eff.kind != "delete":
            return cols
        for rule in self.rules.get(eff.table, ()):
            if rule.on != "delete" or rule.fk.table not in self.relevant:
                continue
            if not any(r in eff.cond for r in rule.fk.ref_columns):
                cols += [c for c in rule.fk.ref_columns if c not in cols]
        return cols

    # -- where the documents are -------------------------------------------------------------
    def affected(self, place: Place, eff: Effect) -> bool:
        """Whether the effect can change what the place's documents hold (a change of columns
        none of them keeps changes nothing)."""
        if place.kind == "nested":
            held = held_columns(place.chain)
            return bool(held) and (eff.kind == "delete" or bool(set(eff.changes) & held))
        if eff.kind == "delete":
            return True
        if place.kind == "root" and place.plan.spec.filter:
            return True  # the filter may read the changed columns
        return bool(set(eff.changes) & set(place.columns()))

    def skipped(self, place: Place, eff: Effect) -> bool:
        """The triggering row's own aggregate: its root event already deletes it or, for a
        primary-key change, reads it again whole."""
        if place.embed is None or eff.trigger is None or eff.rule is None:
            return False
        if place.kind == "nested":
            return self._under_trigger(place, eff.rule.fk, eff.trigger)
        if place.plan.table.name != eff.trigger:
            return False
        fk, e = eff.rule.fk, place.embed
        joined = set(zip(e.child_columns, e.parent_columns, strict=True))
        if joined != set(zip(fk.columns, fk.ref_columns, strict=True)):
            return False
        if eff.rule.on == "delete":
            return True  # the parent document is deleted with its row
        return sorted(fk.ref_columns) == sorted(place.plan.pk)

    @staticmethod
    def _under_trigger(place: Place, fk: ForeignKey, trigger: str) -> bool:
        """A nested row changed because the row embedded under it (by this very foreign key)
        was deleted or changed: that row's own event rebuilds the documents holding it, which
        are the ones holding these rows, as long as MongoDB can find them (MySQL no longer
        links them)."""
        assert place.embed is not None
        pairs = set(zip(fk.columns, fk.ref_columns, strict=True))
        for sub in place.embed.embeds:
            if sub.view.table.name != trigger:
                continue
            if set(zip(sub.parent_columns, sub.child_columns, strict=True)) != pairs:
                continue
            if findable_in_documents(TreeRole(place.plan, (*place.chain, sub))):
                return True
        return False

    def locate(self, place: Place, col: str) -> tuple[str, str, Any] | None:
        """(where, document path, converter) of a column in a place: where is "root" (the
        document) or "inner" (inside the element / sub-document); None if not mapped."""
        p, e = place.plan, place.embed
        if place.kind == "nested":
            found = tree_locate(p, place.chain, col)
            return None if found is None else ("doc", found[0], found[1])
        if e is not None:
            f = e.view.field_for(col)
            if f is not None:
                return ("inner", f.name, f.convert)
            if col in e.child_columns:
                rc = e.parent_columns[e.child_columns.index(col)]
                return self._root_path(p, rc)
            return None
        return self._root_path(p, col)

    @staticmethod
    def _root_path(p: CollectionPlan, col: str) -> tuple[str, str, Any] | None:
        if col in p.pk:
            i = p.pk.index(col)
            path = "_id" if len(p.pk) == 1 else f"_id.{col}"
            return ("root", path, p.id_converters[i])
        f = p.root.field_for(col)
        return ("root", f.name, f.convert) if f is not None else None

    # -- static check for plan ----------------------------------------------------------------
    def problems(self) -> list[str]:
        """Cascades CDC could not follow with this mapping (plan blocks on each)."""
        found: list[str] = []
        seen: set[tuple[str, frozenset[str], str]] = set()
        todo: list[Effect] = []
        for ref, rules in self.rules.items():
            for rule in rules:
                if rule.fk.table not in self.relevant:
                    continue
                cond = dict.fromkeys(rule.fk.columns, 0)
                kind: Kind = (
                    "delete" if rule.on == "delete" and rule.action == "CASCADE" else "update"
                )
                changes = dict.fromkeys(rule.fk.columns, 0)
                todo.append(Effect(rule.fk.table, cond, kind, changes, rule, ref))
        while todo:
            eff = todo.pop()
            state = (eff.table, frozenset(eff.cond), eff.kind)
            if state in seen:
                continue
            seen.add(state)
            via = eff.rule.describe() if eff.rule else eff.table
            need = self.needs_rows(eff)
            row_source = False
            for place in self.places.get(eff.table, ()):
                if not self.affected(place, eff):
                    continue  # it changes nothing these documents hold
                if self.skipped(place, eff):
                    # its documents go with the triggering row, but discovery still reads
                    # the rows they hold for the next level (Applier.cascade)
                    cols = [*eff.cond, *need]
                    if need and all(self.locate(place, c) is not None for c in cols):
                        row_source = True
                    continue
                missing = [c for c in eff.cond if self.locate(place, c) is None]
                if missing:
                    found.append(
                        f"{via}: {eff.table}.{', '.join(missing)} is not in "
                        f"{place.describe()}, so CDC cannot find the documents the cascade "
                        "changes (map the column, or leave it out of `exclude`)"
                    )
                    continue
                if all(self.locate(place, c) is not None for c in need):
                    row_source = True
            rows: list[dict[str, Any]] | None = [dict.fromkeys(need, 0)] if row_source else None
            nxt, problems = self.follow(eff, rows)
            found += [f"{via}: {p}" for p in problems]
            todo += nxt
        return sorted(set(found))
