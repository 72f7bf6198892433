"""`snnexp export ckpt=PATH format=onnx|torchscript|nir`: a per-step model and its metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from snnexp.config.schema import EXPORT_FORMATS, ExportConfig
from snnexp.config.validate import to_schema
from snnexp.errors import ConfigError
from snnexp.outputs import atomic_path, refuse_existing


def export(cfg: ExportConfig | DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt`` in ``cfg.format``; returns the written paths and the metadata."""
    from snnexp.export.formats import FORMATS
    from snnexp.export.step import StepModule, metadata
    from snnexp.inference.model import load_model

    ec = to_schema(cfg, ExportConfig)
    if ec.format not in FORMATS:
        raise ConfigError(f"format={ec.format} is unknown: choose one of "
                          f"{', '.join(EXPORT_FORMATS)} (e.g. format=onnx)")
    if ec.ckpt in (None, "", "???"):
        raise ConfigError("config key 'ckpt' is missing: snnexp export ckpt=PATH/best.pt "
                          "format=onnx")
    suffix, writer = FORMATS[ec.format]
    out = (Path(ec.output).expanduser() if ec.output
           else Path(ec.paths.output_dir) / f"model{suffix}")
    meta_path = out.with_name(out.name + ".json")
    refuse_existing([out, meta_path], ec.overwrite)
    model = load_model(ec.ckpt)
    step = StepModule(model.net)
    meta = metadata(step, model, ec.format)
    with atomic_path(out) as tmp:
        writer(step, tmp, {"opset": ec.opset, "window_us": model.window_us})
        with atomic_path(meta_path) as tmp_meta:
            tmp_meta.write_text(json.dumps(meta, indent=1))
    return {"output": str(out), "metadata": str(meta_path), "meta": meta}


def export_command(cfg: DictConfig) -> str:
    res = export(cfg)
    n = len(res["meta"]["states"])
    print(f"wrote {res['output']} (one step per call: frame {res['meta']['input_shape']} and "
          f"{n} state tensors in, the prediction and {n} state tensors out) and "
          f"{res['metadata']}")
    return res["output"]
