"""Playbooks: thresholds, gates and hooks per step, validated like mapping files.

version: 1
defaults: {max_lag_seconds: 2, verify_max_age_minutes: 15, lease_seconds: 15}
steps:
  dual_write:                       # the step INTO this phase
    gates: [backfill_complete, cdc_lag, verify_clean, dlq_empty]
    custom_gates: [{name: app-healthy, http: "http://app/health"}]
    hooks:
      before: [{run: "flagctl set dual_write on"}]
      after: [{http: "http://chat/webhook?msg=dual_write"}]
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from migrator.errors import ConfigError
from migrator.model.phases import PHASES
from migrator.model.settings import load_yaml, validation_problems

GateName = Literal["backfill_complete", "cdc_lag", "verify_clean", "dlq_empty"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Action(_Model):
    """A hook or custom gate: a shell command (exit 0 = success) or an HTTP GET (2xx)."""

    name: str | None = None
    run: str | None = None
    http: str | None = None
    timeout_seconds: float = Field(60, gt=0)

    @model_validator(mode="after")
    def _one(self) -> Action:
        if bool(self.run) == bool(self.http):
            raise ValueError("give exactly one of `run` (a shell command) or `http` (a URL)")
        return self

    @property
    def label(self) -> str:
        return self.name or (f"run: {self.run}" if self.run else f"GET {self.http}")


class Hooks(_Model):
    before: list[Action] = Field(default_factory=list)
    after: list[Action] = Field(default_factory=list)


class Step(_Model):
    gates: list[GateName] = Field(default_factory=list)
    custom_gates: list[Action] = Field(default_factory=list)
    hooks: Hooks = Field(default_factory=Hooks)
    max_lag_seconds: float | None = Field(None, gt=0)
    verify_max_age_minutes: float | None = Field(None, gt=0)


class Defaults(_Model):
    max_lag_seconds: float = Field(2.0, gt=0)
    verify_max_age_minutes: float = Field(15.0, gt=0)
    lease_seconds: float = Field(15, gt=0)  # renewed every third of it while held
    # the write switch (read_mongo -> write_mongo)
    freeze_timeout_seconds: float = Field(10.0, gt=0)
    reverify_window_minutes: float = Field(5.0, gt=0)


class Playbook(_Model):
    version: Literal[1]
    defaults: Defaults = Field(default_factory=Defaults)
    steps: dict[str, Step] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _phases(self) -> Playbook:
        for name in self.steps:
            if name not in PHASES:
                raise ValueError(f"unknown phase {name!r} in steps (phases: {', '.join(PHASES)})")
        return self

    def step(self, phase: str) -> Step:
        return self.steps.get(phase, Step())


DEFAULT_GATES: dict[str, list[str]] = {
    "backfill": [],
    "sync": ["backfill_complete"],
    "dual_write": ["backfill_complete", "cdc_lag", "verify_clean", "dlq_empty"],
    "read_mongo": ["cdc_lag", "verify_clean", "dlq_empty"],
    "write_mongo": ["cdc_lag", "verify_clean", "dlq_empty"],
    "done": ["verify_clean", "dlq_empty"],
}


def default_playbook() -> Playbook:
    return Playbook(
        version=1,
        steps={p: Step(gates=g) for p, g in DEFAULT_GATES.items()},
    )


def load_playbook(path: str | Path | None) -> Playbook:
    if path is None:
        return default_playbook()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read playbook {p}: {exc.strerror}") from None
    data, lines = load_yaml(text, str(p))
    try:
        return Playbook.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, lines, str(p))
        raise ConfigError("invalid playbook:\n  " + "\n  ".join(problems)) from None
