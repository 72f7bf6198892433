"""Which task a checkpoint was trained for, and the check that it is the one asked for."""

from __future__ import annotations

from typing import Any

from snnexp.errors import CheckpointError


def task_of(state: dict[str, Any]) -> str:
    """The task a checkpoint was trained for (checkpoints from before tasks: regression)."""
    task = (state.get("config") or {}).get("task") or {}
    return str(task.get("name", "regression")) if isinstance(task, dict) else "regression"


def check_task(state: dict[str, Any], expected: str, path: Any) -> None:
    """CheckpointError unless the checkpoint ``state`` was trained for ``expected``."""
    found = task_of(state)
    if found != expected:
        raise CheckpointError(f"checkpoint '{path}' is a {found} model, not a {expected} one: "
                              f"use it with task={found}, or pass a {expected} checkpoint")
