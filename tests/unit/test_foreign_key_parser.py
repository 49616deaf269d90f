"""Foreign keys read from SHOW CREATE TABLE (all a SELECT-only user can read them from on
MariaDB): awkward names, composite keys, other databases, every rule, MySQL 8 and MariaDB
output, and text elsewhere in the statement that only looks like a foreign key."""

from __future__ import annotations

import random

from migrator.model.schema import ForeignKey, parse_foreign_keys

MARIADB = """CREATE TABLE `child` (
  `id` int(11) NOT NULL,
  `parent_id` int(11) DEFAULT NULL,
  `j` longtext CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL CHECK (json_valid(`j`)),
  `c` varchar(10) DEFAULT NULL COMMENT 'it''s a \\\\ CONSTRAINT `x` FOREIGN KEY (`y`)',
  PRIMARY KEY (`id`),
  KEY `parent_id` (`parent_id`),
  CONSTRAINT `child_ibfk_1` FOREIGN KEY (`parent_id`) REFERENCES `parent` (`id`) ON DELETE CASCADE ON UPDATE CASCADE,
  CONSTRAINT `c2` FOREIGN KEY (`parent_id`) REFERENCES `parent` (`id`) ON DELETE NO ACTION,
  CONSTRAINT `child3_ibfk_1` FOREIGN KEY (`id`) REFERENCES `o`.`xchild` (`id`) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"""  # noqa: E501

MYSQL8 = """CREATE TABLE `film_actor` (
  `actor_id` smallint unsigned NOT NULL,
  `film_id` smallint unsigned NOT NULL,
  `last_update` timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  `hidden` int DEFAULT NULL /*!80023 INVISIBLE */,
  PRIMARY KEY (`actor_id`,`film_id`),
  KEY `idx_fk_film_id` (`film_id`),
  CONSTRAINT `fk_film_actor_actor` FOREIGN KEY (`actor_id`) REFERENCES `actor` (`actor_id`) ON DELETE RESTRICT ON UPDATE CASCADE,
  CONSTRAINT `fk_film_actor_film` FOREIGN KEY (`film_id`,`actor_id`) REFERENCES `film` (`film_id`,`a`) ON UPDATE SET DEFAULT,
  CONSTRAINT `chk` CHECK ((`actor_id` > 0))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci COMMENT='FOREIGN KEY (`x`) REFERENCES `y` (`z`)'
/*!50100 PARTITION BY KEY (actor_id) PARTITIONS 2 */"""  # noqa: E501


def fk(name, table, cols, ref, ref_cols, on_delete="RESTRICT", on_update="RESTRICT", db=None):
    return ForeignKey(name, table, tuple(cols), ref, tuple(ref_cols), on_delete, on_update, db)


def test_mariadb_output():
    assert parse_foreign_keys(MARIADB, "child") == [
        fk("child_ibfk_1", "child", ["parent_id"], "parent", ["id"], "CASCADE", "CASCADE"),
        fk("c2", "child", ["parent_id"], "parent", ["id"], "NO ACTION"),
        fk("child3_ibfk_1", "child", ["id"], "xchild", ["id"], "SET NULL", db="o"),
    ]


def test_mysql8_output():
    assert parse_foreign_keys(MYSQL8, "film_actor") == [
        fk("fk_film_actor_actor", "film_actor", ["actor_id"], "actor", ["actor_id"], on_update="CASCADE"),  # noqa: E501
        fk("fk_film_actor_film", "film_actor", ["film_id", "actor_id"], "film", ["film_id", "a"], on_update="SET DEFAULT"),  # noqa: E501
    ]  # fmt: skip


def test_ansi_quotes_and_an_unnamed_key_with_match():
    text = (
        'CREATE TABLE "t" ("a" int, FOREIGN KEY ("a") REFERENCES "d"."p ""q""" ("b") '
        "MATCH FULL ON UPDATE CASCADE)"
    )
    assert parse_foreign_keys(text, "t") == [
        fk("", "t", ["a"], 'p "q"', ["b"], on_update="CASCADE", db="d")
    ]


NAME_CHARS = "abcXYZ_09 `'\",().-é\n\\/*"
RULES = ["RESTRICT", "CASCADE", "SET NULL", "NO ACTION", "SET DEFAULT"]


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(NAME_CHARS) for _ in range(rng.randint(1, 12)))


def _q(name: str, quote: str) -> str:
    return quote + name.replace(quote, quote * 2) + quote


def _string(rng: random.Random) -> str:
    """A string literal as the server writes it: quotes doubled (MariaDB) or backslashed."""
    text = _name(rng) + " CONSTRAINT `x` FOREIGN KEY (`a`) REFERENCES `b` (`c`)) ON DELETE ("
    text = text.replace("\\", "\\\\")
    return "'" + text.replace("'", rng.choice(["''", "\\'"])) + "'"


def _render(key: ForeignKey, rng: random.Random, quote: str, mysql8: bool) -> str:
    sep = "," if mysql8 else ", "
    ref = _q(key.ref_table, quote)
    if key.ref_database is not None:
        ref = _q(key.ref_database, quote) + "." + ref
    out = f"CONSTRAINT {_q(key.name, quote)} FOREIGN KEY " if key.name else "FOREIGN KEY "
    out += f"({sep.join(_q(c, quote) for c in key.columns)}) REFERENCES {ref} "
    out += f"({sep.join(_q(c, quote) for c in key.ref_columns)})"
    for clause, rule in (("DELETE", key.on_delete), ("UPDATE", key.on_update)):
        # the default is left out; MySQL 8 also writes it
        if rule != "RESTRICT" or (mysql8 and rng.random() < 0.5):
            out += f" ON {clause} {rule}"
    return out


def _distractors(rng: random.Random, quote: str) -> list[str]:
    c = _q(_name(rng), quote)
    return rng.sample(
        [
            f"{c} varchar(20) DEFAULT {_string(rng)} COMMENT {_string(rng)}",
            f"{_q(_name(rng), quote)} int GENERATED ALWAYS AS (({c} + 1)) VIRTUAL",
            f"{_q(_name(rng), quote)} timestamp NULL ON UPDATE CURRENT_TIMESTAMP",
            f"{_q(_name(rng), quote)} int DEFAULT NULL /*!80023 INVISIBLE */",
            f"KEY {_q(_name(rng), quote)} ({c}(10),{_q(_name(rng), quote)})",
            f"CONSTRAINT {_q(_name(rng), quote)} CHECK (({c} <> ')' and {c} > 0))",
            f"UNIQUE KEY {_q(_name(rng), quote)} ({c})",
        ],
        k=rng.randint(0, 7),
    )


def test_generated_statements_parse_back_to_their_keys():
    for seed in range(500):
        rng = random.Random(seed)
        quote = '"' if rng.random() < 0.2 else "`"
        mysql8 = rng.random() < 0.5
        table = _name(rng)
        keys = []
        for _ in range(rng.randint(0, 4)):
            n = rng.randint(1, 4)
            keys.append(
                fk(
                    _name(rng) if rng.random() < 0.9 else "",
                    table,
                    [_name(rng) for _ in range(n)],
                    _name(rng),
                    [_name(rng) for _ in range(n)],
                    rng.choice(RULES),
                    rng.choice(RULES),
                    db=_name(rng) if rng.random() < 0.3 else None,
                )
            )
        items = [f"{_q(_name(rng), quote)} int NOT NULL"]
        items += [_render(k, rng, quote, mysql8) for k in keys]
        for other in _distractors(rng, quote):
            items.insert(rng.randint(1, len(items)), other)
        body = ",\n  ".join(items)
        text = f"CREATE TABLE {_q(table, quote)} (\n  {body}\n) ENGINE=InnoDB"
        text += f" COMMENT={_string(rng)}" if rng.random() < 0.5 else ""
        assert parse_foreign_keys(text, table) == keys, f"seed {seed}:\n{text}"
