"""conf/model and conf/norm: keys of the schemas, reference defaults, comments, buildable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from snnexp.config.schema import ModelConfig, NeuronConfig, NormConfig, StageConfig
from snnexp.config.validate import to_schema
from snnexp.models import build_network

CONF = Path(__file__).resolve().parents[1] / "conf"
MODELS = ["sew", "plain", "spiking"]
NORMS = ["bn", "rms", "mul", "none"]


def _keys(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _check_comments(path: Path) -> None:
    text = path.read_text()
    assert "@package" not in text
    for line in text.splitlines():
        body = line.split("#", 1)[0].strip()
        if body and body.endswith(":") or ": " in body:
            assert "#" in line, f"{path.name}: key without a trailing comment: {line!r}"


@pytest.mark.parametrize("name", MODELS)
def test_model_group(name: str) -> None:
    path = CONF / "model" / f"{name}.yaml"
    _check_comments(path)
    raw = OmegaConf.to_container(OmegaConf.load(path))
    assert set(raw) == _keys(ModelConfig)
    assert set(raw["neuron"]) == _keys(NeuronConfig)
    assert all(set(stage) == _keys(StageConfig) for stage in raw["stages"])
    model = to_schema(OmegaConf.create(raw), ModelConfig)
    assert model == ModelConfig(block_type=name)  # schema defaults = docs/METHOD.md stages
    net = build_network(model, NormConfig(), (2, 32, 40))
    assert net.fc_hidden.out_features == 512


@pytest.mark.parametrize("name", NORMS)
def test_norm_group(name: str) -> None:
    path = CONF / "norm" / f"{name}.yaml"
    _check_comments(path)
    raw = OmegaConf.load(path)
    assert set(raw) == _keys(NormConfig)
    assert to_schema(raw, NormConfig) == NormConfig(kind=name)
