"""`snnexp view`: event frames, labels and predictions rendered into a video file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from snnexp.errors import CheckpointError, ConfigError
from tests.ship_support import compose, make_checkpoint, recording


@pytest.fixture(scope="module")
def ckpt(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"), sim_dir)


def _view(tmp_path: Path, *args: str) -> dict:
    from snnexp.commands.view import view

    return view(compose("view", [f"paths.output_dir={tmp_path}", "progress=false",
                                 "num_threads=1", *args]))


def _frames(path: Path) -> list[np.ndarray]:
    import imageio.v2 as imageio

    with imageio.get_reader(str(path)) as r:
        return [np.asarray(f) for f in r]


def _near(img: np.ndarray, colour: tuple[int, int, int], tol: float = 60) -> np.ndarray:
    return np.linalg.norm(img.astype(float) - np.asarray(colour, float), axis=-1) < tol


def test_video_of_a_recording_has_its_frames_colours_and_horizon(ckpt, sim_dir,
                                                                  tmp_path) -> None:
    from snnexp.data.pipeline import prepare_recording
    from snnexp.inference.model import load_model
    from snnexp.viz.video import LABEL_COLOUR, OFF_COLOUR, ON_COLOUR, Layout

    out = tmp_path / "v.mp4"
    res = _view(tmp_path, f"recording={recording(sim_dir)}", f"output={out}", "data.downsample=2",
                "start_s=1.0", "duration_s=1.0", "fps=20", "speed=0.5", "scale=3", "contrast=1")
    frames = _frames(out)
    assert len(frames) == res["frames"] == 40  # 1 s of recording at half speed, 20 fps
    size = Layout(48, 36, 3.0, chart=True).size  # 96 x 72 sensor, downsampled by 2, scaled 3x
    assert all(f.shape == (size[1], size[0], 3) for f in frames)
    # labels of the shown windows from the data pipeline (same grid, same Madgwick filter)
    data = load_model(ckpt).config.data
    prep = prepare_recording(recording(sim_dir), data)
    w0 = res["windows"][0]
    assert w0 == 100
    for k in (5, 20, 35):
        img = frames[k][:108, :144]  # the scaled event frame
        assert _near(img, ON_COLOUR).sum() > 20 and _near(img, OFF_COLOUR).sum() > 20
        label = math.degrees(prep.angles[w0 + int(k * 2.5)])  # 25 ms of recording per frame
        r = math.radians(label)
        pts = [(72 + d * math.cos(r), 54 - d * math.sin(r)) for d in range(-40, 41, 8) if d]
        # a white pixel within 1 px of each point (H.264 blurs a 2 px line a little)
        on_line = [_near(img[round(y) - 1:round(y) + 2, round(x) - 1:round(x) + 2], LABEL_COLOUR,
                         90).any() for x, y in pts]
        assert all(on_line), (k, label, on_line)
        off = math.radians(label + 60)  # away from the line: no white
        assert not _near(img[round(54 - 30 * math.sin(off)), round(72 + 30 * math.cos(off))][None],
                         LABEL_COLOUR, 90)[0]


def test_video_with_a_checkpoint_draws_prediction_and_chart(ckpt, sim_dir, tmp_path) -> None:
    from snnexp.viz.video import PRED_COLOUR

    out = tmp_path / "p.gif"
    res = _view(tmp_path, f"ckpt={ckpt}", f"recording={recording(sim_dir)}", f"output={out}",
                "duration_s=0.5", "fps=10", "speed=1")
    frames = _frames(out)
    assert len(frames) == res["frames"] == 5
    chart = frames[-1][72 + 18:]  # below the event frame and the text line
    assert _near(chart, PRED_COLOUR, 80).sum() > 10  # the prediction's curve


def test_view_refuses_bad_output_and_other_resolution(ckpt, sim_dir, tmp_path) -> None:
    from snnexp.config.schema import SimConfig
    from snnexp.data.simulate import simulate_recording

    existing = tmp_path / "v.mp4"
    existing.write_bytes(b"old video")
    with pytest.raises(ConfigError, match="already exists"):
        _view(tmp_path, f"recording={recording(sim_dir)}", f"output={existing}")
    assert existing.read_bytes() == b"old video"
    with pytest.raises(ConfigError, match=r"unknown video format '\.avi'; name it \.mp4"):
        _view(tmp_path, f"recording={recording(sim_dir)}", f"output={tmp_path / 'v.avi'}")
    other = simulate_recording(SimConfig(duration_s=0.3, width=64, height=48),
                               tmp_path / "o.aedat4")
    with pytest.raises(CheckpointError, match="is 64x48 pixels but checkpoint"):
        _view(tmp_path, f"ckpt={ckpt}", f"recording={other}", f"output={tmp_path / 'o.mp4'}")
    assert not (tmp_path / "o.mp4").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_evaluate_video_true_renders_the_test_sequence(ckpt, tmp_path) -> None:
    from snnexp.commands.evaluate import evaluate

    out = evaluate(compose("evaluate", [f"ckpt={ckpt}", f"paths.output_dir={tmp_path}",
                                        "plots=false", "monitor=none", "video=true",
                                        "trainer.num_threads=1"]))
    parts = json.loads((tmp_path / "metrics.json").read_text())["recordings"]  # test sequences
    assert len(parts) >= 2  # TINY tests a held-out recording and its training recording's part
    assert [Path(v).name for v in out["videos"]] == [f"video_{n}.mp4" for n in range(len(parts))]
    for n, part in enumerate(parts):
        steps = part["steps"] + 1  # the sequence's windows (the first is the start)
        assert len(_frames(tmp_path / f"video_{n}.mp4")) == int(steps * 0.01 * 25)
