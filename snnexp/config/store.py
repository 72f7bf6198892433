"""Register the schemas with Hydra's ConfigStore so composition is typed and checked."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from snnexp.config.schema import (
    EvaluateConfig,
    ExportConfig,
    InferConfig,
    SimulateConfig,
    SummarizeConfig,
    TrainConfig,
    ViewConfig,
)

# Primary configs (conf/train.yaml, ...) list these first in their defaults, so every group
# option and command-line override is merged into a typed node: an unknown key or a value of
# the wrong type fails at compose time with the key's name.
SCHEMAS = {
    "train_schema": TrainConfig,
    "evaluate_schema": EvaluateConfig,
    "simulate_schema": SimulateConfig,
    "summarize_schema": SummarizeConfig,
    "view_schema": ViewConfig,
    "infer_schema": InferConfig,
    "export_schema": ExportConfig,
}


def register_schemas() -> None:
    """Store the schemas under the names the primary configs refer to (idempotent)."""
    from snnexp.config.resolvers import register_resolvers

    register_resolvers()
    cs = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        cs.store(name=name, node=node)
