"""`status --watch --playbook FILE` judges the next step by that playbook: the commands it
tells on-call to type must use it too (else they run the built-in gates and skip its hooks)."""

from __future__ import annotations

from migrator.backfill.copy import backfill
from migrator.model.settings import load_mapping

from .helpers import make_shop
from .terminal import Terminal


def test_the_advised_cutover_uses_the_playbook_the_view_was_given(env, tmp_path):
    path = make_shop(env, orders=5)
    backfill(load_mapping(path), workers=1)  # planned, copy complete: `cutover --to backfill`
    pb = tmp_path / "team-playbook.yaml"
    pb.write_text("version: 1\ndefaults: {freeze_timeout_seconds: 2}\n")
    with Terminal("status", "-m", str(path), "--playbook", str(pb), "--watch", columns=400) as term:
        screen = term.wait_for("every gate of backfill passes", f"migrator cutover -m {path}")
        assert term.ctrl_c() == 0
    advised = [ln.strip() for ln in screen.splitlines() if "$ migrator cutover" in ln]
    assert advised and all(f"--playbook {pb}" in ln for ln in advised), screen
