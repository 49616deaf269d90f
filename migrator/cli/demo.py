"""`migrator demo`: a whole migration on throwaway servers, the application writing throughout."""

from __future__ import annotations

import click

from migrator.cli import render
from migrator.cli.backfill import print_summary
from migrator.cli.common import err, handle_errors, out
from migrator.devtools.demo import DemoResult, run_demo


@click.command("demo")
@click.option(
    "--orders",
    type=click.IntRange(10, 100_000),
    default=300,
    show_default=True,
    help="Orders in the generated shop (customers and products scale with it).",
)
@click.option("--workers", type=click.IntRange(1, 16), default=2, show_default=True)
@click.option("--keep", is_flag=True, help="Leave the servers running (stop them by PID yourself).")
@handle_errors
def demo_cmd(orders: int, workers: int, keep: bool) -> None:
    """Run a whole migration on throwaway local servers while an application keeps writing.

    Starts MariaDB and a MongoDB wire server, creates a shop database, and walks every phase:
    plan, backfill, sync (CDC), verify, dual_write, read_mongo, write_mongo (the write pause is
    measured), a rollback to read_mongo, forward again, a final verification, done. The
    application writes through the dual-write SDK all along. Needs no servers installed.

    Example: migrator demo --orders 1000
    """
    with render.RichProgress(err) as progress:
        res = run_demo(
            orders=orders,
            workers=workers,
            progress=progress,
            say=lambda m: err.print(m, highlight=False),
            keep=keep,
        )
    _print_walk(res)
    _print_summary(res, keep)


def _print_walk(res: DemoResult) -> None:
    """What the demo decided and did: the plan's findings, the copy, each phase step."""
    out.rule("plan")
    for c in res.plan.checks:
        if c.level in ("block", "warn"):
            out.print(f"  {c.level:5} {c.name}: {c.message}")
    out.print(
        f"  {len(res.plan.checks)} checks, {'BLOCKED' if res.plan.blocked else 'no blockers'}"
    )
    out.rule("backfill")
    print_summary(res.backfill)
    out.rule("cutover")
    out.print(
        render.table(
            "Phase walk",
            ["step", "seconds", "write pause", "gates"],
            [
                [
                    f"{s['from']} -> {s['to']}",
                    f"{s['seconds']:.2f}",
                    f"{s['write_pause_ms']:.0f} ms" if s["write_pause_ms"] else "",
                    ", ".join(f"{g['name']} {g['measured']}" for g in s["gates"]) or "-",
                ]
                for s in res.steps
            ],
        )
    )


def _print_summary(res: DemoResult, keep: bool) -> None:
    """What the demo ended with: counts, the final verification, the pause, samples."""
    cdc = res.cdc
    out.rule("summary")
    diffs = 0
    if res.verify is not None:
        t = res.verify.to_dict()["totals"]
        diffs = t["missing"] + t["extra"] + t["different"]
    out.print(f"rows moved by the backfill: {res.backfill.rows:,}")
    out.print(
        f"application writes through the SDK: {res.app_writes:,} "
        f"({res.app_retries} retried during the write freeze)"
    )
    if cdc is not None:
        out.print(f"CDC events applied: {cdc.events:,} ({cdc.dead_letters} dead letters)")
    out.print(
        f"differences found by the final verification: {diffs}"
        + (" (clean)" if diffs == 0 else " [bold red](NOT clean)[/]")
    )
    out.print(f"write pause (freeze set -> cleared): {res.write_pause_ms or 0:.0f} ms")
    out.print(f"rollback write_mongo -> read_mongo: {res.rollback_seconds or 0:.2f} s")
    out.print(
        render.table(
            "MySQL rows -> MongoDB documents",
            ["collection", "rows", "documents"],
            [[k, f"{res.rows.get(k, 0):,}", f"{v:,}"] for k, v in res.documents.items()],
        )
    )
    out.rule("sample: orders")
    out.print(render.document(res.samples.get("orders")))
    out.rule("sample: products (categories many-to-many, each with its department)")
    out.print(render.document(res.samples.get("products")))
    out.print(
        "catalog edits in MySQL while CDC ran: "
        + ", ".join(f"{k} {v}" for k, v in res.catalog.items())
    )
    out.print(
        f"[green]demo finished in {res.seconds:.1f} s.[/] Next: `migrator init --documents` "
        f"proposes documents for your database; `migrator plan -m` checks it; the README explains "
        f"backfill, cdc, verify, cutover and rollback. This run's mapping: {res.mapping_path}"
    )
    if keep:
        out.print(
            f"servers left running: {res.stack.urls()} (PIDs {[p.pid for p in res.stack.procs]})"
        )
