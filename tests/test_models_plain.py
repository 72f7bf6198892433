"""models/ is the method only: it imports nothing from the engine and its modules run plain."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import snnexp.models

MODELS = Path(snnexp.models.__file__).parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_models_import_nothing_from_the_engine() -> None:
    files = sorted(MODELS.glob("*.py"))
    assert len(files) >= 6
    for path in files:
        found = {n for n in _imports(path) if n.startswith("snnexp.engine") or n == "snnexp"
                 or n.endswith(".engine")}
        assert not found, f"{path.name} imports {found}"
        text = path.read_text()
        for private in ("_global_forward_hooks", "_forward_hooks", "torch.nn.modules.module"):
            assert private not in text, f"{path.name} reaches into torch's hooks ({private})"


def test_building_and_running_a_network_loads_no_engine_module() -> None:
    code = (
        "import sys, torch\n"
        "from snnexp.config.schema import ModelConfig, NormConfig\n"
        "from snnexp.models import Monitors, build_network\n"
        "net = build_network(ModelConfig(hidden=8), NormConfig(kind='bn'), (2, 16, 20))\n"
        "with Monitors(net, spikes=True, norms=True):\n"
        "    net(torch.rand(3, 2, 2, 16, 20)).sum().backward()\n"
        "print(sorted(m for m in sys.modules if m.startswith('snnexp.engine')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_neurons_know_nothing_of_norms() -> None:
    """A neuron cannot touch BatchNorm's running statistics: it does not even import norms."""
    assert not {n for n in _imports(MODELS / "neurons.py") if "norms" in n}
    assert "running_" not in (MODELS / "neurons.py").read_text()
