"""Documents a batch creates, built in memory and written once.

A root row inserted in this batch whose document MongoDB did not hold when the batch began
(the prefetch read it) becomes one `InsertOne` at the insert's place in the order; every later
change of the batch to that document (its own updates, its elements pushed, changed, pulled)
is applied here to the document instead of costing a statement each. Two rules keep it exact:

- Operations on other documents commute with these (a different `_id`). An operation that may
  reach the document some other way (a filter on fields, a rebuild, its delete) first closes
  it: the content is fixed as it stands, written at its place, and later changes are
  statements as usual.
- The server decides whether the document is new. If it exists after all (another writer
  created it since the prefetch: the SDK, a repair, a retried write), the insert fails on its
  key and the writer sends the same changes as the usual idempotent statements instead
  (`Tagged.fallback`), so the result is what it would have been without this module.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import InsertOne

from migrator.cdc.writer import Tagged
from migrator.model.bsonorder import sort_documents


@dataclass
class NewDoc:
    doc: dict[str, Any]
    slot: Tagged  # its place in the collection's operations
    fallback: list[Tagged] = field(default_factory=list)  # the same changes as statements


class NewDocs:
    """The batch's open new documents, per collection and `_id` key."""

    def __init__(self) -> None:
        self.open: dict[str, dict[Hashable, NewDoc]] = {}
        self.folded = 0  # changes applied here instead of sent

    def start(self, collection: str, key: Hashable, doc: dict[str, Any], slot: Tagged) -> None:
        first = Tagged(slot.op, slot.event, slot.position)
        self.open.setdefault(collection, {})[key] = NewDoc(doc, slot, [first])

    def get(self, collection: str, key: Hashable) -> NewDoc | None:
        return self.open.get(collection, {}).get(key)

    def fold(self, nd: NewDoc, statements: list[Tagged]) -> None:
        nd.fallback += statements
        self.folded += 1

    def close(self, collection: str, key: Hashable | None = None) -> None:
        """Fix the content of one open document (`key`) or of all of a collection's."""
        docs = self.open.get(collection)
        if not docs:
            return
        for k in [key] if key is not None else list(docs):
            nd = docs.pop(k, None)
            if nd is not None:
                nd.slot.op = InsertOne(nd.doc)
                nd.slot.fallback = nd.fallback

    def close_all(self) -> None:
        for collection in list(self.open):
            self.close(collection)


# -- the changes, as MongoDB applies them (see applier._element_updates) ---------------------
def _at(element: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        element = element.get(part) if isinstance(element, dict) else None
    return element


def _matches(element: Any, match: dict[str, Any]) -> bool:
    return isinstance(element, dict) and all(_at(element, k) == v for k, v in match.items())


def set_fields(doc: dict[str, Any], update: dict[str, Any]) -> None:
    """A root update ($set and $unset of top-level fields; $setOnInsert does not apply)."""
    doc.update(update.get("$set", {}))
    for k in update.get("$unset", {}):
        doc.pop(k, None)


def upsert_element(
    doc: dict[str, Any],
    name: str,
    element: dict[str, Any],
    match: dict[str, Any],
    tops: set[str] | None,
    sort: Sequence[Sequence[str]],
) -> None:
    """Replace the elements matching `match` (only the `tops` fields when given), or push the
    element if none does; then keep the array in its order (`$push` with `$sort`)."""
    # copies, never changes in place: the statements kept for the fallback share these values
    array = list(doc.get(name) or [])
    found = False
    for i, el in enumerate(array):
        if not _matches(el, match):
            continue
        found = True
        if tops is None:
            array[i] = element
            continue
        changed = {k: v for k, v in el.items() if k not in tops or k in element}
        changed.update({k: element[k] for k in tops if k in element})
        array[i] = changed
    if not found:
        array.append(element)
    if sort:
        sort_documents(array, sort)
    doc[name] = array


def pull_element(doc: dict[str, Any], name: str, match: dict[str, Any]) -> None:
    if isinstance(doc.get(name), list):
        doc[name] = [el for el in doc[name] if not _matches(el, match)]
