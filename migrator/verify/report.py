"""Verification reports: JUnit XML for CI, Markdown for humans (JSON is VerifyResult.to_dict)."""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree as ET

from migrator.verify.results import VerifyResult


def _line(d: dict[str, Any]) -> str:
    text = f"{d['kind']} _id={json.dumps(d['_id'], default=str)}"
    if d.get("reason"):
        text += f"\n    {d['reason']}"
    for f in d["fields"]:
        text += f"\n    {f['path']}: expected {f['expected']}, found {f['actual']}"
    return text


def junit(result: VerifyResult) -> str:
    """One test case per collection; a failure lists that collection's differences."""
    data = result.to_dict()
    suite = ET.Element(
        "testsuite",
        name="migrator verify",
        tests=str(len(result.collections)),
        failures=str(sum(0 if c.clean else 1 for c in result.collections)),
        time=f"{result.seconds:.3f}",
    )
    for c in result.collections:
        case = ET.SubElement(suite, "testcase", classname="migrator.verify", name=c.name)
        if not c.clean:
            lines = [_line(d) for d in data["differences"] if d["collection"] == c.name]
            fail = ET.SubElement(
                case,
                "failure",
                message=f"{c.missing} missing, {c.extra} extra, "
                f"{c.different} different, {c.unconvertible} unconvertible "
                f"of {c.checked} checked",
            )
            fail.text = "\n".join(lines)
        out = ET.SubElement(case, "system-out")
        out.text = f"checked {c.checked}, rechecked clean {c.rechecked}, repaired {c.repaired}"
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def markdown(result: VerifyResult) -> str:
    data = result.to_dict()
    out = [
        f"# Verification ({result.mode}): {'clean' if result.ok else 'DIFFERENCES'}",
        "",
        f"Started {data['started']}, {result.seconds:.1f} s.",
        "",
        "| collection | checked | missing | extra | different | unconvertible | repaired |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in result.collections:
        out.append(
            f"| {c.name} | {c.checked} | {c.missing} | {c.extra} | {c.different} "
            f"| {c.unconvertible} | {c.repaired} |"
        )
    if data["differences"]:
        out += ["", "## Differences", "", "```"] + [_line(d) for d in data["differences"]] + ["```"]
    return "\n".join(out) + "\n"
