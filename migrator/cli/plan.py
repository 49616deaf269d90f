"""`migrator plan`: preflight checks and a dry description."""

from __future__ import annotations

import click

from migrator.cli import render
from migrator.cli.common import handle_errors, json_option, load, mapping_option, out, print_json
from migrator.preflight.plan import PlanReport, preflight

_STYLE = {
    "ok": "[green]ok[/]",
    "info": "[blue]info[/]",
    "warn": "[yellow]warn[/]",
    "block": "[bold red]BLOCK[/]",
}


@click.command("plan")
@mapping_option
@json_option
@click.option("--no-samples", is_flag=True, help="Do not print sample documents.")
@handle_errors
def plan_cmd(mapping_path: str, as_json: bool, no_samples: bool) -> None:
    """Preflight the source and target and describe the migration (exit 1 if anything blocks).

    Checks the binlog (ROW, FULL image, FULL metadata, retention), privileges, primary keys,
    FK cascades the binlog will not carry, lossy types and document sizes, and renders one
    sample document per collection from real rows.

    Example: migrator plan -m shop.yaml --json
    """
    report = preflight(load(mapping_path))
    if as_json:
        print_json(report.to_dict())
    else:
        out.print(f"[bold]source[/] {report.source}   [bold]target[/] {report.target}")
        out.print(
            render.table(
                "Checks",
                ["level", "check", "finding"],
                [[_STYLE[c.level], c.name, c.message] for c in report.checks],
            )
        )
        out.print(
            render.table(
                "Collections",
                ["collection", "table", "rows", "embeds", "max doc (est.)"],
                [
                    [
                        c.name,
                        c.table,
                        f"{c.rows_estimate:,}",
                        ", ".join(c.embeds) or "-",
                        f"{(c.max_document_bytes_estimate or 0) / 1024:,.0f} KiB",
                    ]
                    for c in report.collections
                ],
            )
        )
        _trees(report)
        if not no_samples:
            for c in report.collections:
                if c.sample is not None:
                    out.rule(f"sample document: {c.name}")
                    out.print(render.document(c.sample))
        if report.blocked:
            out.print("[bold red]blocked:[/] fix the BLOCK findings above before backfilling")
        else:
            out.print("[green]ready:[/] no blocking problems")
    raise SystemExit(1 if report.blocked else 0)


def _trees(report: PlanReport) -> None:
    """Each collection's document tree, and per embedded table: its largest array and how
    many documents one change of a row touches (plan measures both)."""
    for c in report.collections:
        if not c.nodes:
            continue
        out.rule(f"document tree: {c.name}")
        for line in c.tree:
            out.print(line, markup=False, highlight=False)
        out.print(
            render.table(
                "",
                ["node", "table", "kind", "largest array", "documents per row change (avg / max)"],
                [
                    [
                        n["path"],
                        n["table"],
                        n["kind"],
                        "-" if n["largest_array"] is None else f"{n['largest_array']:,}",
                        f"{n['docs_per_change_avg']:g} / {n['docs_per_change_max']:,}",
                    ]
                    for n in c.nodes
                ],
            )
        )
