"""One source of defaults: the YAML tree. The schemas carry types; every group composes."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from snnexp.config import schema as S
from snnexp.config.store import register_schemas
from snnexp.config.validate import to_schema

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["data", "model", "norm", "optimizer", "scheduler", "logger", "trainer", "experiment",
          "task", "debug", "paths"]
PRIMARY = {"train": S.TrainConfig, "evaluate": S.EvaluateConfig, "simulate": S.SimulateConfig,
           "summarize": S.SummarizeConfig, "view": S.ViewConfig, "infer": S.InferConfig,
           "export": S.ExportConfig}


def _compose(name: str, *overrides: str):
    register_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="snnexp.conf", version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides), return_hydra_config=False)
    finally:
        GlobalHydra.instance().clear()


def _options() -> list[tuple[str, str]]:
    return [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), _options())
def test_every_group_option_fills_every_schema_key(group: str, option: str, tmp_path) -> None:
    overrides = [f"{group}={option}", f"paths.output_dir={tmp_path}",
                 "data.paths=[rec.aedat4]"]
    cfg = _compose("train", *overrides)
    tc = to_schema(cfg, S.TrainConfig)  # no ??? left, no key outside the schema
    assert isinstance(tc, S.TrainConfig)
    missing = [k for k, v in _flat(OmegaConf.to_container(cfg)).items() if v == "???"]
    assert not missing, f"{group}={option} leaves {missing} without a value"


@pytest.mark.parametrize("name", ["evaluate", "simulate", "summarize", "view", "infer",
                                  "export"])
def test_other_commands_compose_to_their_schema(name: str, tmp_path) -> None:
    extra = {"evaluate": ["ckpt=x.pt"], "simulate": [], "summarize": ["dirs=[x]"], "view": [],
             "infer": ["ckpt=x.pt", "source=x.aedat4"], "export": ["ckpt=x.pt"]}[name]
    cfg = _compose(name, *extra, f"paths.output_dir={tmp_path}")
    assert isinstance(to_schema(cfg, PRIMARY[name]), PRIMARY[name])


def _flat(tree: object, prefix: str = "") -> dict[str, object]:
    if isinstance(tree, dict):
        out: dict[str, object] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): tree}


def test_schema_py_holds_no_default_values() -> None:
    """Fields carry types; only nested groups have a factory (their values come from YAML)."""
    tree = ast.parse(Path(S.__file__).read_text())
    literals = []
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for stmt in cls.body:
            if isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                literals.append(f"{cls.name}.{ast.unparse(stmt.target)} = "
                                f"{ast.unparse(stmt.value)}")
    allowed = [x for x in literals if "field(default_factory=" in x and "lambda" not in x]
    assert literals == allowed, set(literals) - set(allowed)


@pytest.mark.parametrize(("cls", "rel", "node"), [
    (S.TrainerConfig, "trainer/default.yaml", None),
    (S.NormConfig, "norm/bn.yaml", None),
    (S.NeuronConfig, "model/sew.yaml", "neuron"),
    (S.SimConfig, "data/aedat4.yaml", "sim"),
    (S.DataConfig, "data/aedat4.yaml", None),
    (S.OptimizerConfig, "optimizer/adam.yaml", None),
])
def test_python_defaults_are_the_yaml_values(cls: type, rel: str, node: str | None) -> None:
    raw = OmegaConf.to_container(OmegaConf.load(CONF / rel), resolve=False)
    for part in node.split(".") if node else []:
        raw = raw[part]
    obj = cls()
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            continue
        expected = raw.get(f.name)
        if isinstance(expected, str) and ("${" in expected or expected == "???"):
            expected = "???"  # interpolations are resolved by Hydra, required in Python
        assert value == expected, (cls.__name__, f.name, value, expected)


def test_train_defaults_are_the_ones_the_readme_names(tmp_path) -> None:
    tc = to_schema(_compose("train", f"paths.output_dir={tmp_path}"), S.TrainConfig)
    assert (tc.norm.kind, tc.data.seq_length, tc.data.downsample) == ("rms", 200, 8)
    assert (tc.model.block_type, tc.optimizer.name, tc.trainer.max_epochs) == ("sew", "adam", 30)
    assert (tc.scheduler.name, tc.optimizer.lr) == ("cosine", 1e-3)
