"""Review findings for the SDK's handling of children stored as waiting for their parent
(`Applier.stored_pending`: "leave" before the switch, "adopt" after it)."""

from __future__ import annotations

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.cutover.machine import Machine
from migrator.cutover.playbook import default_playbook
from migrator.cutover.sdk import DualWriter
from migrator.errors import MigratorError
from migrator.model.settings import load_mapping
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


# -- helpers for the findings below -------------------------------------------------------------
_PHASES = ("backfill", "sync", "dual_write", "read_mongo", "write_mongo")


def _setup(env, tables, collections):
    env.sql(*tables)
    path = env.mapping(collections)
    backfill(load_mapping(path), workers=1)
    run_cdc(load_mapping(path), mode="until-caught-up")
    w = DualWriter(load_mapping(path), control_ttl=0, freeze_wait=0.5)
    m = Machine(load_mapping(path), default_playbook(), actor="test@ci")
    for target in _PHASES[:4]:
        m.step(target, force=True, reason="test")
    return path, w, m


def _switch(path, m):
    run_cdc(load_mapping(path), mode="until-caught-up")  # CDC caught up, as the switch wants
    m.step("write_mongo", force=True, reason="test")


_PC = (
    "CREATE TABLE p (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)",
    "CREATE TABLE c (id INT PRIMARY KEY, p_id INT NOT NULL, v INT NOT NULL, KEY (p_id))",
    "INSERT INTO p VALUES (1, 'one')",
    "INSERT INTO c VALUES (1, 1, 10)",
)
_PS = (
    "  - name: ps\n    from: p\n"
    "    embed:\n      - {as: cs, from: c, on: {p_id: id}, many: true, order_by: [id]}\n"
)


def _refused(write):
    """Whether the SDK refused the write (acceptable: the application learns it did not
    happen, nothing is lost)."""
    try:
        write()
    except MigratorError:
        return True
    return False


def test_an_update_of_a_waiting_child_after_the_switch_is_not_silently_dropped(env):
    """A line committed before the switch waits (`pending`) for its header document. After
    the switch the application updates the line through the SDK: `_mongo_row` finds no
    element, and `_write` returned silently (before that it predicted a row of NULLs, whose
    NULL p_id escaped `_refuse_orphan`: dropped as well). The application is told the update
    succeeded. When the header is then written, the SDK adopts the waiting line from MySQL
    with its *old* value, and reverse sync keeps it: an acknowledged update is lost in both
    stores."""
    path, w, m = _setup(env, _PC, _PS)
    try:
        w.insert("c", {"id": 2, "p_id": 7, "v": 20})  # waits for ps 7
        _switch(path, m)
        refused = _refused(lambda: w.update("c", {"id": 2}, {"v": 30}))
        w.insert("p", {"id": 7, "name": "seven"})  # adopts the waiting line
        run_cdc(load_mapping(path), mode="until-caught-up")  # reverse sync
        if not refused:
            doc = env.target.ps.find_one({"_id": 7})
            assert [(e["id"], e["v"]) for e in doc["cs"]] == [(2, 30)], (
                "the acknowledged update of the waiting line is lost in MongoDB",
                doc,
            )
            assert env.sql("SELECT v FROM c WHERE id = 2") == [(30,)]
    finally:
        m.close()
        w.close()


def test_a_delete_of_a_waiting_child_after_the_switch_is_not_undone(env):
    """As above with a DELETE: it is a silent no-op (the element is not found), the line
    stays in MySQL and in `pending`, and the header's later write adopts it: the row the
    application deleted (and was told so) comes back in the document and stays in MySQL."""
    path, w, m = _setup(env, _PC, _PS)
    try:
        w.insert("c", {"id": 2, "p_id": 7, "v": 20})  # waits for ps 7
        _switch(path, m)
        refused = _refused(lambda: w.delete("c", {"id": 2}))
        w.insert("p", {"id": 7, "name": "seven"})
        run_cdc(load_mapping(path), mode="until-caught-up")  # reverse sync
        if not refused:
            doc = env.target.ps.find_one({"_id": 7})
            assert doc["cs"] == [], ("the deleted line came back in its document", doc)
            assert env.sql("SELECT COUNT(*) FROM c WHERE id = 2") == [(0,)]
    finally:
        m.close()
        w.close()


def test_adopt_does_not_resurrect_a_child_mongodb_deleted_while_reverse_sync_lags(env):
    """`c` is embedded in two collections: `ps` (by p_id) and `qs` (by q_id). A line committed
    before the switch is in qs 1 and waits for ps 7. After the switch the application deletes
    it through the SDK: it is pulled from qs 1 (MongoDB, the truth) and acknowledged. Before
    reverse sync has carried that delete to MySQL, the application writes p 7: "adopt" reads
    the waiting arrays from MySQL, which still has the line, and puts it into ps 7. Reverse
    sync then deletes it (qs 1's change) and re-inserts it (ps 7's change): the deleted row is
    back in MySQL and in ps 7, and qs 1 disagrees with MySQL."""
    tables = (
        "CREATE TABLE p (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)",
        "CREATE TABLE q (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)",
        "CREATE TABLE c (id INT PRIMARY KEY, p_id INT NOT NULL, q_id INT NOT NULL,"
        " v INT NOT NULL, KEY (p_id), KEY (q_id))",
        "INSERT INTO p VALUES (1, 'one')",
        "INSERT INTO q VALUES (1, 'one')",
        "INSERT INTO c VALUES (1, 1, 1, 10)",
    )
    colls = (
        "  - name: ps\n    from: p\n"
        "    embed:\n      - {as: cs, from: c, on: {p_id: id}, many: true, order_by: [id]}\n"
        "  - name: qs\n    from: q\n"
        "    embed:\n      - {as: cs, from: c, on: {q_id: id}, many: true, order_by: [id]}\n"
    )
    path, w, m = _setup(env, tables, colls)
    try:
        w.insert("c", {"id": 2, "p_id": 7, "q_id": 1, "v": 20})  # in qs 1, waits for ps 7
        _switch(path, m)
        assert [e["id"] for e in env.target.qs.find_one({"_id": 1})["cs"]] == [1, 2]
        refused = False
        try:
            w.delete("c", {"id": 2})  # acknowledged: pulled from qs 1
        except MigratorError:
            refused = True  # acceptable (the fix): it waits for ps 7, whose document is missing
        if not refused:
            assert [e["id"] for e in env.target.qs.find_one({"_id": 1})["cs"]] == [1]
        w.insert("p", {"id": 7, "name": "seven"})  # reverse sync has not run yet
        doc = env.target.ps.find_one({"_id": 7})
        run_cdc(load_mapping(path), mode="until-caught-up")  # reverse sync
        left = env.sql("SELECT COUNT(*) FROM c WHERE id = 2")
        assert left == [(1 if refused else 0,)], (
            "the row the application deleted is back in MySQL",
            doc,
        )
        assert [e["id"] for e in doc["cs"]] == ([2] if refused else []), (
            "adopt brought back the line MongoDB deleted",
            doc,
        )
        res = verify(load_mapping(path))
        assert res.ok, [(d.id, d.fields) for d in res.differences]
    finally:
        m.close()
        w.close()


def test_a_root_insert_after_the_switch_keeps_children_joined_by_a_non_key_column(env):
    """The embed joins by a unique non-key column (c.p_code -> p.code). A line committed before
    the switch references a header not written yet: CDC does not record it in `pending` (only
    children joined by the key wait there), so "adopt" never sees it. After the switch the SDK
    writes the header (an insert is not refused: `_refuse_source_reads` only checks the
    update's values and the child table's own writes). The document gets an empty array
    ($setOnInsert) and reverse sync makes MySQL's rows of that scope equal the array: it
    DELETEs the committed line."""
    tables = (
        "CREATE TABLE p (id INT PRIMARY KEY, code VARCHAR(10) NOT NULL, UNIQUE KEY (code))",
        "CREATE TABLE c (id INT PRIMARY KEY, p_code VARCHAR(10) NOT NULL, v INT NOT NULL,"
        " KEY (p_code))",
        "INSERT INTO p VALUES (1, 'A')",
        "INSERT INTO c VALUES (1, 'A', 10)",
    )
    colls = (
        "  - name: ps\n    from: p\n"
        "    embed:\n      - {as: cs, from: c, on: {p_code: code}, many: true, order_by: [id]}\n"
    )
    path, w, m = _setup(env, tables, colls)
    try:
        w.insert("c", {"id": 2, "p_code": "X", "v": 20})  # no header 'X' yet
        _switch(path, m)
        refused = False
        try:
            w.insert("p", {"id": 7, "code": "X"})
        except MigratorError:
            refused = True
        doc = None if refused else env.target.ps.find_one({"_id": 7})
        run_cdc(load_mapping(path), mode="until-caught-up")  # reverse sync
        assert env.sql("SELECT v FROM c WHERE id = 2") == [(20,)], (
            "reverse sync deleted the line committed before the switch",
            doc,
        )
        if doc is not None:
            assert [e["id"] for e in doc["cs"]] == [2], ("the committed line is missing", doc)
    finally:
        m.close()
        w.close()


def test_an_update_of_a_child_of_a_row_outside_the_filter_is_not_silently_dropped(env):
    """`ps` keeps only active headers (a collection filter). A line of an inactive header has
    no document: MySQL is its only home, and reverse sync never writes it. After the switch
    the application updates that line through the SDK. `_refuse_source_reads` lets a child
    table's write through (only the root table's writes are refused for a filter), and
    `_mongo_row` finds no element, so `_write` returns silently (the predicted row of NULLs
    before the change escaped `_refuse_orphan` too). The application is told the update
    succeeded; it is in neither store, ever."""
    tables = (
        "CREATE TABLE p (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL, active TINYINT NOT NULL)",
        "CREATE TABLE c (id INT PRIMARY KEY, p_id INT NOT NULL, v INT NOT NULL, KEY (p_id))",
        "INSERT INTO p VALUES (1, 'one', 1), (3, 'three', 0)",
        "INSERT INTO c VALUES (1, 1, 10), (5, 3, 50)",
    )
    colls = (
        "  - name: ps\n    from: p\n    filter: 'active = 1'\n"
        "    embed:\n      - {as: cs, from: c, on: {p_id: id}, many: true, order_by: [id]}\n"
    )
    path, w, m = _setup(env, tables, colls)
    try:
        _switch(path, m)
        assert env.target.ps.find_one({"_id": 3}) is None
        refused = False
        try:
            w.update("c", {"id": 5}, {"v": 55})
        except MigratorError:
            refused = True  # acceptable: the application learns the update did not happen
        run_cdc(load_mapping(path), mode="until-caught-up")  # reverse sync
        if not refused:
            assert env.sql("SELECT v FROM c WHERE id = 5") == [(55,)], (
                "an acknowledged update of a row that lives only in MySQL was dropped"
            )
    finally:
        m.close()
        w.close()
