"""The declared dependencies cover what snnexp really loads.

SpikingJelly is installed with ``--no-deps`` (its metadata pulls a CUDA torch build), so its own
run-time imports must come from snnexp's dependencies: a dependency dropped as "unused" that
SpikingJelly imports breaks README's install on a fresh machine (it did once: loguru).
"""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys

from packaging.requirements import Requirement

ENTRY_MODULES = ["snnexp.models", "snnexp.engine", "snnexp.training.loop",
                 "snnexp.training.classification", "snnexp.commands.train",
                 "snnexp.commands.evaluate", "snnexp.commands.view", "snnexp.commands.infer",
                 "snnexp.data.pipeline", "snnexp.data.bundle"]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(roots: list[str]) -> set[str]:
    """The distributions ``roots`` pull in (their requirements, transitively, no extras)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for raw in reqs:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def test_every_third_party_module_snnexp_loads_comes_from_a_declared_dependency() -> None:
    code = ("import sys\n" + "".join(f"import {m}\n" for m in ENTRY_MODULES)
            + "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    declared = [Requirement(r).name for r in md.requires("snnexp") or []
                if "extra ==" not in r]
    allowed = _closure(declared) | {"snnexp", "spikingjelly"}
    owners = md.packages_distributions()
    missing = {}
    for module in loaded:
        if module in sys.stdlib_module_names or module.startswith("_") or module not in owners:
            continue  # the standard library, interpreter internals, snnexp's own source tree
        dists = {_norm(d) for d in owners[module]}
        if not dists & allowed:
            missing[module] = sorted(dists)
    assert not missing, f"loaded but not (transitively) declared in pyproject.toml: {missing}"
