"""Children waiting for their parent document: a child change whose parent document does not
exist yet waits, first in the batch, then in the state store (`pending`), shared by every
consumer; when the parent appears the aggregate is rebuilt, when it is deleted the wait ends;
past a bound the change becomes a dead letter (`upkeep.py`)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from migrator.cdc.upkeep import ApplierView
from migrator.cdc.writer import BatchResult
from migrator.model.events import Position
from migrator.model.keys import id_key
from migrator.model.transform import CollectionPlan
from migrator.state.store import encode_key, now


@dataclass
class Pending:
    """A child change waiting for its parent document."""

    collection: str
    parent_id: Any
    embed: str
    kind: str  # upsert | remove
    element: dict[str, Any] | None
    match: dict[str, Any]
    position: dict[str, Any]
    child_table: str = ""
    child_key: list[Any] = field(default_factory=list)  # the child row's primary key

    def to_doc(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "parent_id": self.parent_id,
            "embed": self.embed,
            "kind": self.kind,
            "element": self.element,
            "match": self.match,
            "position": self.position,
            "child_table": self.child_table,
            "child_key": encode_key(self.child_key),
            "at": now(),
        }


class Waiting:
    """The batch's children waiting for a parent document: released when it appears, ended
    when it is deleted."""

    a: ApplierView
    result: BatchResult
    new_pending: list[Pending]
    stored_pending: dict[str, dict[Hashable, list[dict[str, Any]]]]
    drop_pending: list[Any]

    if TYPE_CHECKING:  # the batch's own (rebuilds.py)

        def rebuild_add(
            self, plan: CollectionPlan, doc_id: Any = None, key: Any = None
        ) -> None: ...

    def _release_waiting(self, p: CollectionPlan, doc_id: Any, pos: Position) -> None:
        """The parent document exists now: the children that waited for it (earlier in this
        batch, or in earlier batches, maybe another consumer's) land by reading the aggregate
        whole at the end of the batch. Replaying their images could bring back a state a
        later change (a cascade, a newer event elsewhere) already replaced. ("adopt": the
        new document read them from the source already, see root.)"""
        k = id_key(doc_id)
        mine = [x for x in self.new_pending if x.collection == p.name and id_key(x.parent_id) == k]
        stored = self.stored_pending.get(p.name, {}).pop(k, [])
        if mine or stored:
            self.new_pending = [x for x in self.new_pending if x not in mine]
            if self.a.stored_pending != "adopt":
                self.rebuild_add(p, doc_id)
            self.drop_pending += [d["_id"] for d in stored]
            self.result.resolved_pending += len(mine) + len(stored)

    def _end_wait(self, p: CollectionPlan, doc_id: Any) -> None:
        """The parent is gone: its waiting children have nothing to wait for."""
        k = id_key(doc_id)
        self.new_pending = [
            x for x in self.new_pending if not (x.collection == p.name and id_key(x.parent_id) == k)
        ]
        self.drop_pending += [d["_id"] for d in self.stored_pending.get(p.name, {}).pop(k, [])]
