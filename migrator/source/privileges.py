"""Least privilege: what each phase needs on the source, and what the source user has.

Read from `SHOW GRANTS` (MySQL and MariaDB write it the same way), including the grants of
roles the user holds when the server lets the user read them. The grant text itself is never
shown: MariaDB puts the password hash in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from migrator.model.schema import split_top_level
from migrator.source.connection import as_text, query

# What each phase does on the source, and why it needs each privilege. "TABLE" privileges are
# needed on every mapped table; the others are global (ON *.*).
PHASES: dict[str, dict[str, str]] = {
    "backfill": {
        "SELECT": "read the mapped tables",
        "REPLICATION CLIENT": "read the binlog position the copy starts from",
    },
    "cdc": {
        "REPLICATION SLAVE": "stream the binlog",
        "REPLICATION CLIENT": "list binlogs and read positions",
        "SELECT": "read rows whose document must be rebuilt",
    },
    "verify": {"SELECT": "compare rows with documents"},
    "cutover": {"REPLICATION CLIENT": "read the position the write switch catches up to"},
    "sdk writes": {
        "SELECT": "read a row before changing it",
        "INSERT": "write new rows (dual_write and after)",
        "UPDATE": "change rows",
        "DELETE": "delete rows",
    },
    "reverse sync": {
        "SELECT": "read a row before changing it",
        "INSERT": "write MongoDB's new documents back as rows (write_mongo and after)",
        "UPDATE": "change rows",
        "DELETE": "delete rows",
    },
}
GLOBAL_ONLY = {"REPLICATION SLAVE", "REPLICATION CLIENT"}
# Names servers use for the same privilege (MariaDB 10.5 renamed REPLICATION CLIENT).
_SATISFIED_BY = {
    "REPLICATION CLIENT": {"REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"},
    "REPLICATION SLAVE": {"REPLICATION SLAVE", "REPLICATION REPLICA"},
}
_NAME = r"(?:`(?:[^`]|``)*`|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\*|[^\s.`'\"]+)"
_GRANT = re.compile(
    rf"^(?P<verb>GRANT|REVOKE)\s+(?P<privs>.+?)\s+ON\s+(?:(?:TABLE|PROCEDURE|FUNCTION)\s+)?"
    rf"(?P<db>{_NAME})(?:\.(?P<table>{_NAME}))?\s+(?:TO|FROM)\s",
    re.I | re.S,
)
_ROLE = re.compile(r"^GRANT\s+(?P<roles>[`'\"].+?)\s+TO\s", re.I | re.S)


@dataclass
class Grant:
    privileges: set[str]  # upper case; "ALL" for ALL PRIVILEGES; column grants are left out
    database: str  # a LIKE pattern, or "*"
    table: str  # a name, or "*"


@dataclass
class Grants:
    grants: list[Grant] = field(default_factory=list)
    # MySQL 8 partial revokes: a global privilege taken back on one database
    revokes: list[Grant] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    unread_roles: list[str] = field(default_factory=list)

    def has(self, privilege: str, database: str, table: str | None) -> bool:
        names = _SATISFIED_BY.get(privilege, {privilege})
        if table is not None and any(
            ("ALL" in r.privileges or names & r.privileges) and _like(database, r.database)
            for r in self.revokes
        ):
            return False
        for g in self.grants:
            if not ("ALL" in g.privileges or names & g.privileges):
                continue
            if g.database == "*":
                return True
            if table is None:
                continue  # a global privilege cannot come from a database grant
            if _like(database, g.database) and g.table in ("*", table):
                return True
        return False


def _unquote(name: str) -> str:
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] and name[0] in "`'\"":
        return name[1:-1].replace(name[0] * 2, name[0])
    return name


def _like(name: str, pattern: str) -> bool:
    """MySQL grants match database names as LIKE patterns (`_` and `%`, `\\_` literal)."""
    if "%" not in pattern and "_" not in pattern:
        return name == pattern
    glob = ""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            glob += re.escape(pattern[i + 1])
            i += 2
            continue
        glob += ".*" if ch == "%" else "." if ch == "_" else re.escape(ch)
        i += 1
    return re.fullmatch(glob, name) is not None


def _split_privileges(text: str) -> set[str]:
    out = split_top_level(text)
    privs = set()
    for p in out:
        p = " ".join(p.split()).upper()
        if "(" in p:
            continue  # column-level: not enough for whole rows
        privs.add("ALL" if p in ("ALL", "ALL PRIVILEGES") else p)
    return privs


def parse_grants(lines: Iterable[str]) -> Grants:
    out = Grants()
    for line in lines:
        m = _GRANT.match(line.strip())
        if m:
            grant = Grant(
                _split_privileges(m["privs"]), _unquote(m["db"]), _unquote(m["table"] or "*")
            )
            (out.revokes if m["verb"].upper() == "REVOKE" else out.grants).append(grant)
            continue
        r = _ROLE.match(line.strip())
        if r:
            out.roles += [role.strip() for role in r["roles"].split(",")]
    return out


def read_grants(conn: Any) -> Grants:
    grants = parse_grants(as_text(r[0]) for r in query(conn, "SHOW GRANTS"))
    for role in grants.roles:
        try:
            more = parse_grants(as_text(r[0]) for r in query(conn, f"SHOW GRANTS FOR {role}"))
        except Exception:
            grants.unread_roles.append(_unquote(role.split("@")[0]))
            continue
        grants.grants += more.grants
    return grants


@dataclass
class PhaseNeeds:
    phase: str
    missing: list[str]  # "INSERT on shop.orders (write new rows ...)"

    @property
    def ok(self) -> bool:
        return not self.missing


def check_phases(grants: Grants, database: str, tables: list[str]) -> list[PhaseNeeds]:
    out = []
    for phase, needs in PHASES.items():
        missing = []
        for privilege, why in needs.items():
            if privilege in GLOBAL_ONLY:
                if not grants.has(privilege, database, None):
                    missing.append(f"{privilege} ON *.* ({why})")
                continue
            lacking = [t for t in tables if not grants.has(privilege, database, t)]
            if lacking:
                where = (
                    f"{database}.*"
                    if len(lacking) == len(tables)
                    else ", ".join(f"{database}.{t}" for t in lacking)
                )
                missing.append(f"{privilege} ON {where} ({why})")
        out.append(PhaseNeeds(phase, missing))
    return out


def grant_statements(database: str, user: str = "'migrator'@'%'") -> list[str]:
    """The least-privilege grants for a whole migration, as the README gives them."""
    return [
        f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO {user};",
        f"GRANT SELECT ON `{database}`.* TO {user};",
        f"-- from dual_write on (SDK writes, reverse sync):\n"
        f"GRANT INSERT, UPDATE, DELETE ON `{database}`.* TO {user};",
    ]
