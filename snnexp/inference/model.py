"""A trained network ready for one-step inference, rebuilt from a checkpoint's own config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snnexp.data.frames import frame_shape
from snnexp.data.targets import TargetMap
from snnexp.errors import CheckpointError


@dataclass
class LoadedModel:
    """The network (eval mode) and what framing its input needs."""

    net: Any  # snnexp.models.SNNRegressor
    path: Path
    config: Any  # snnexp.config.schema.TrainConfig of the training run
    target_map: TargetMap
    window_us: int
    downsample: int
    input_shape: tuple[int, int, int]  # (2, H, W) after downsampling
    sensor: tuple[int, int] | None  # (width, height) of the training recordings, if recorded

    def check_resolution(self, width: int, height: int, what: str) -> None:
        """A CheckpointError unless a ``width`` x ``height`` sensor gives this model's input."""
        shape = frame_shape(width, height, self.downsample)
        if tuple(shape) == tuple(self.input_shape):
            return
        trained = (f"{self.sensor[0]}x{self.sensor[1]}" if self.sensor
                   else f"input {self.input_shape[2]}x{self.input_shape[1]}")
        raise CheckpointError(
            f"{what} is {width}x{height} pixels but checkpoint '{self.path}' was trained on "
            f"{trained} (downsample {self.downsample}): use a camera / recording of the same "
            "resolution, or train a model for this one")

    def initial_target(self, angle_deg: float) -> float:
        """The network's output value for an angle in degrees (the integrator's start)."""
        import math

        return float(self.target_map.to_target(math.radians(float(angle_deg))))


def load_model(ckpt: str | Path, device: str = "cpu", engine: str | None = None) -> LoadedModel:
    """Load ``ckpt`` (best.pt / last.pt / best_weights.pt) and rebuild its network in eval mode.

    ``engine`` (auto | native | torch) prepares the network for that backend, frozen (its
    weights stay as loaded, so the engine may keep derived copies: the hidden layer's sparse
    product); None keeps the plain model (export traces the plain modules).

    Anything that is not an snnexp regression checkpoint, or whose weights do not fit the
    network its config describes, is a one-line CheckpointError.
    """
    import torch

    from snnexp.commands.evaluate import _train_config
    from snnexp.models import build_network
    from snnexp.training.checkpoint import load_checkpoint

    path = Path(ckpt).expanduser()
    obj = _load(path, load_checkpoint)
    data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
    config = obj.get("config")
    if not isinstance(config, dict) or not {"model", "norm", "data"} <= set(config) \
            or "input_shape" not in data or "target_map" not in data:
        raise CheckpointError(
            f"'{path}' is not a checkpoint of an snnexp orientation regressor (its model, data "
            "or target settings are missing): pass best.pt / last.pt written by `snnexp train`")
    tc = _train_config(obj, {})
    input_shape = tuple(int(s) for s in data["input_shape"])
    net = build_network(tc.model, tc.norm, input_shape)
    try:
        net.load_state_dict(obj["model"])
    except RuntimeError:
        raise CheckpointError(
            f"checkpoint '{path}' holds weights of another network than its config describes "
            "(another architecture or snnexp version): use a checkpoint written by this snnexp "
            "version's `snnexp train`") from None
    net = net.to(device=torch.device(device), dtype=torch.float32).eval()
    if engine is not None:
        from snnexp import engine as engines

        engines.prepare(net, engine, frozen=True)
    recs = data.get("recordings") or []
    sensor = (int(recs[0]["width"]), int(recs[0]["height"])) if recs and "width" in recs[0] \
        else None
    return LoadedModel(net=net, path=path, config=tc,
                       target_map=TargetMap.from_dict(data["target_map"]),
                       window_us=int(data.get("window_us", tc.data.window_us)),
                       downsample=int(tc.data.downsample), input_shape=input_shape, sensor=sensor)


def _load(path: Path, load_checkpoint: Any) -> dict[str, Any]:
    """The checkpoint's dict; weights-only files (best_weights.pt) are accepted too."""
    import zipfile

    import torch

    if path.is_file() and zipfile.is_zipfile(path):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            obj = None
        if isinstance(obj, dict) and obj.get("format") == "snnexp-weights":
            return obj
    return load_checkpoint(path, map_location="cpu")
