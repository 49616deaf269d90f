"""The state package owns every state collection: no other module opens one by name or
reads a `meta` document itself (it asks the StateStore)."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "migrator"
TOUCHES = re.compile(r"\bstate\.(db|meta)\b|\.meta\.(find|update|insert|replace|delete)")


def test_only_the_state_package_opens_state_collections():
    offenders = [
        f"{p.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
        for p in sorted(PACKAGE.rglob("*.py"))
        if "state" not in p.relative_to(PACKAGE).parts[:1]
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if TOUCHES.search(line)
    ]
    assert not offenders, "\n".join(offenders)
    # the check itself sees what it is meant to see
    assert TOUCHES.search('doc = state.meta.find_one({"_id": "x"})')
    assert TOUCHES.search('coll = self.state.db["audit"]')
