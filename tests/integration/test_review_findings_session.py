"""Review findings for the SDK's handling of children stored as waiting for their parent
(`Applier.stored_pending`: "leave" before the switch, "adopt" after it)."""

from __future__ import annotations

from migrator.backfill import backfill
from migrator.cdc.runner import run_cdc
from migrator.config import load_mapping
from migrator.cutover.machine import Machine
from migrator.cutover.playbook import default_playbook
from migrator.cutover.sdk import DualWriter
from migrator.errors import MigratorError
from migrator.verify.engine import verify


def test_a_child_waiting_across_the_switch_survives_the_sdk_writing_its_parent(env):
    """No foreign key (MySQL allows it; the sweep's docstring expects it): before the switch
    the application writes a line before its header, through the SDK. The line is committed
    in MySQL and waits (`pending`) for its parent document. After the switch the application
    writes the header through the SDK (MongoDB first). Nobody releases the waiting line any
    more: the SDK did not (it left them) and CDC applies nothing from
    MySQL after the switch (its sweeps stop too). The document is written with an empty
    array, and reverse sync of that document then DELETEs the line from MySQL (it deletes
    every child row of the parent that the array does not hold): a committed write is lost
    in both stores, and verify is clean. Either the line lands in the document or the SDK
    refuses the header's write; the line must never disappear."""
    env.sql(
        "CREATE TABLE p (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)",
        "CREATE TABLE c (id INT PRIMARY KEY, p_id INT NOT NULL, v INT NOT NULL, KEY (p_id))",
        "INSERT INTO p VALUES (1, 'one')",
        "INSERT INTO c VALUES (1, 1, 10)",
    )
    path = env.mapping(
        "  - name: ps\n    from: p\n"
        "    embed:\n      - {as: cs, from: c, on: {p_id: id}, many: true, order_by: [id]}\n"
    )
    backfill(load_mapping(path), workers=1)
    run_cdc(load_mapping(path), mode="until-caught-up")
    w = DualWriter(load_mapping(path), control_ttl=0, freeze_wait=0.5)
    m = Machine(load_mapping(path), default_playbook(), actor="test@ci")
    try:
        walk = iter(("backfill", "sync", "dual_write", "read_mongo", "write_mongo"))
        for target in walk:
            m.step(target, force=True, reason="test")
            if target == "read_mongo":
                break
        # MySQL first: the line is committed; its parent document does not exist: it waits
        w.insert("c", {"id": 2, "p_id": 7, "v": 20})
        assert env.sql("SELECT v FROM c WHERE id = 2") == [(20,)]
        run_cdc(load_mapping(path), mode="until-caught-up")  # CDC caught up, as the switch wants
        assert env.state.pending.count_documents({}) >= 1
        for target in walk:  # -> write_mongo
            m.step(target, force=True, reason="test")
        refused = False
        try:
            w.insert("p", {"id": 7, "name": "seven"})
        except MigratorError:
            refused = True  # acceptable: the application learns, nothing is lost
        if not refused:
            doc = env.target.ps.find_one({"_id": 7})
            assert doc is not None
            assert [e["id"] for e in doc["cs"]] == [2], (
                "the line committed before the switch is missing from its document",
                doc,
            )
        run_cdc(load_mapping(path), mode="until-caught-up")  # reverse sync
        assert env.sql("SELECT v FROM c WHERE id = 2") == [(20,)], (
            "reverse sync deleted the line the application committed before the switch"
        )
        res = verify(load_mapping(path))
        assert res.ok, [(d.id, d.fields) for d in res.differences]
    finally:
        m.close()
        w.close()
