"""Keyset predicates: (a, b) > (x, y) spelled out, with arguments in the right order."""

from migrator.source.reader import range_clause


def test_single_column_range():
    sql, args = range_clause(["id"], (10,), (20,))
    assert sql == "((`id` > %s)) AND ((`id` <= %s))"
    assert args == [10, 20]


def test_composite_range():
    sql, args = range_clause(["a", "b"], (1, "x"), (2, "y"))
    assert sql == (
        "((`a` > %s) OR (`a` = %s AND `b` > %s)) AND ((`a` < %s) OR (`a` = %s AND `b` <= %s))"
    )
    assert args == [1, 1, "x", 2, 2, "y"]


def test_unbounded():
    assert range_clause(["id"], None, None) == ("1=1", [])
    sql, args = range_clause(["id"], None, (5,))
    assert sql == "((`id` <= %s))" and args == [5]


def test_identifiers_are_quoted():
    sql, _ = range_clause(["we`ird"], (1,), None)
    assert "`we``ird`" in sql
