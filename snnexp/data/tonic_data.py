"""Standard event datasets through tonic (``data=tonic``): N-MNIST, POKER-DVS, DVS Gesture and
CIFAR10-DVS.

Each dataset is read with tonic's own class (``tonic.datasets.<name>``) from
``data.root/<name>/``, in the layout tonic extracts its archives to (:data:`TONIC_SETS` says
which folders and files). With ``data.download=false`` (default) nothing is fetched: a missing
or incomplete folder stops with one line naming the folder, what it should hold and the command
that fetches it. tonic's own check of a folder also wants the downloaded archive and the full
sample count (else it downloads); snnexp checks the extracted layout itself (every class has a
sample in every set), so a folder without the archive, or a subset of the samples, is read as
it is (a subset with a warning).

Each sample goes through tonic's transforms, ``Denoise(filter_time=data.denoise_us)`` (null:
off), ``Downsample(spatial_factor=1/data.downsample)`` and ``ToFrame(time_window=data.window_us)``
(or ``n_time_bins=data.n_time_bins`` when that is set), and its frames are kept as the project's
class samples (:class:`snnexp.data.classification.ClassSamples`: events as frame cells per
window), so batching, padding + masks and the split are those of the other classification data.
The framed samples of all sets are cached as one ``.npz`` in ``data.cache_dir`` (measured faster
than tonic's ``DiskCachedDataset``: ``benchmarks/bench_tonic_cache.py``); its key covers the
dataset, every transform setting, ``data.limit_samples``, tonic's version and every sample file
(relative path, size, modification time), so a changed setting or file never reuses old frames.

Roles: the official training set is split (per class, seeded by ``seed``) into train / val by
``data.split`` (its test fraction ignored); the official test set is the test. CIFAR10-DVS has
no official test set: its samples are split into train / val / test by ``data.split``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snnexp.config.schema import TONIC_DATASETS
from snnexp.data.classification import ClassBundle, ClassSamples, _split, read_entry, write_entry
from snnexp.data.sources import absolute
from snnexp.errors import DataError, require

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


@dataclass(frozen=True)
class TonicSet:
    """What snnexp needs to know about one tonic dataset class (read from its source)."""

    name: str  # tonic.datasets.<name>; also the folder under data.root (tonic's save_to)
    folders: tuple[str, ...]  # sub-folders of <root>/<name>: (train, test), or ("",): one set
    suffix: str  # sample files
    layout: str  # what a set folder holds (for the error lines)
    full: tuple[int, ...]  # samples of each full set
    fetch: str = ""  # how to get the files when tonic cannot download them

    @property
    def official_test(self) -> bool:
        return len(self.folders) == 2


TONIC_SETS: dict[str, TonicSet] = {s.name: s for s in (
    TonicSet("NMNIST", ("Train", "Test"), ".bin", "a folder per digit (0 .. 9) of .bin files",
             (60000, 10000)),
    TonicSet("POKERDVS", ("pips_train", "pips_test"), ".npy",
             "folders named after the card (cl, he, di, sp) of .npy files", (48, 20),
             "tonic 1.7 copies pips_train.tar.gz / pips_test.tar.gz from its own source folder "
             "(tonic/datasets/ of the tonic repository; its wheel lacks them): extract them "
             "into"),
    TonicSet("DVSGesture", ("ibmGestureTrain", "ibmGestureTest"), ".npy",
             "a folder per user and lighting (userNN_<lighting>) of <label>.npy files (0 .. 10)",
             (1077, 264)),
    TonicSet("CIFAR10DVS", ("",), ".aedat4",
             "a folder per class (airplane, automobile, ..., truck) of .aedat4 files", (10000,)),
)}
assert tuple(TONIC_SETS) == TONIC_DATASETS, "schema.TONIC_DATASETS must list TONIC_SETS"


def class_names(name: str) -> list[str]:
    """The class names of tonic's dataset ``name``, in label order."""
    classes = _tonic_class(name).classes
    if isinstance(classes, dict):
        return [c for c, _ in sorted(classes.items(), key=lambda kv: kv[1])]
    return [str(c) for c in classes]


def _tonic() -> Any:
    """The tonic package (an optional dependency: ``pip install 'snnexp[tonic]'``)."""
    message = ("data=tonic needs the tonic package ({exc}): pip install 'tonic>=1.7,<1.8' "
               "aedat (or pip install 'snnexp[tonic]')")
    require("tonic.datasets", message)
    require("tonic.transforms", message)
    return require("tonic", message)


def _tonic_class(name: str) -> type:
    return getattr(_tonic().datasets, name)


def _set_dir(spec: TonicSet, root: Path, folder: str) -> Path:
    return root / spec.name / folder if folder else root / spec.name


def _fetch_hint(spec: TonicSet, root: Path) -> str:
    if spec.fetch:
        return f"{spec.fetch} {root / spec.name}/"
    return (f"fetch it with `snnexp train task=classification data=tonic "
            f"data.dataset={spec.name} data.root={root} data.download=true` on a machine with "
            "internet")


def _expected(spec: TonicSet, root: Path) -> str:
    dirs = " and ".join(f"{_set_dir(spec, root, f)}/" for f in spec.folders)
    return f"{dirs} holding {spec.layout}"


def _files(spec: TonicSet, root: Path, folder: str) -> list[Path]:
    d = _set_dir(spec, root, folder)
    return sorted(d.rglob(f"*{spec.suffix}")) if d.is_dir() else []


def set_problem(spec: TonicSet, root: Path, folder: str) -> str | None:
    """Why ``root`` does not hold the extracted files of one set (None: it does)."""
    d = _set_dir(spec, root, folder)
    if not d.is_dir():
        return f"{d}/ does not exist"
    if not _files(spec, root, folder):
        return f"{d}/ holds no {spec.suffix} sample file"
    return None


def layout_problem(spec: TonicSet, root: Path) -> str | None:
    """Why ``root`` does not hold ``spec``'s extracted files (None: it does)."""
    return next((p for f in spec.folders if (p := set_problem(spec, root, f))), None)


def open_set(spec: TonicSet, root: Path, train: bool, download: bool) -> Any:
    """tonic's dataset object of one set (``train``), reading the files under ``root``.

    With the layout in place, tonic's archive / sample-count check (which would download) is
    bypassed; otherwise tonic downloads when ``download`` (else the caller has already stopped).
    """
    cls = _tonic_class(spec.name)
    if set_problem(spec, root, spec.folders[0 if train else -1]) is None:
        # the same class under the same name (tonic's folder is the class name), minus the
        # check that demands the archive and the full count
        cls = type(spec.name, (cls,), {"_check_exists": lambda self: True})
    kwargs: dict[str, Any] = {"train": train} if spec.official_test else {}
    try:
        return cls(save_to=str(root), **kwargs)
    except (OSError, RuntimeError) as exc:  # URLError, FileNotFoundError, a bad archive, ...
        raise DataError(f"tonic could not get {spec.name} into {root / spec.name}/ ({exc}): "
                        f"{_fetch_hint(spec, root)}") from exc
    except (ValueError, KeyError, IndexError) as exc:  # a folder / file name tonic cannot parse
        raise DataError(f"{root / spec.name}/ is not in tonic's {spec.name} layout ({exc!r}): "
                        f"it should be {_expected(spec, root)}") from exc


def transform(cfg: Any, sensor_size: tuple[int, int, int]) -> tuple[Any, tuple[int, int, int]]:
    """tonic's transform of the settings and the frame shape (P, H, W) it produces."""
    T = _tonic().transforms
    f = int(cfg.downsample)
    w, h, p = sensor_size
    size = (-(-w // f), -(-h // f), p)
    steps: list[Any] = []
    if cfg.denoise_us is not None:
        steps.append(T.Denoise(filter_time=float(cfg.denoise_us)))
    if f > 1:
        steps.append(T.Downsample(spatial_factor=1.0 / f))
    if cfg.n_time_bins is not None:
        steps.append(T.ToFrame(sensor_size=size, n_time_bins=int(cfg.n_time_bins)))
    else:
        steps.append(T.ToFrame(sensor_size=size, time_window=float(cfg.window_us),
                               include_incomplete=True))
    return T.Compose(steps), (p, size[1], size[0])


def frames_to_cells(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cells int32, offsets int64 [T + 1]) of count frames [T, P, H, W]: each count c of a
    cell becomes c entries of its flat index, grouped by frame (the class samples' form)."""
    steps = frames.shape[0]
    flat = np.asarray(frames).reshape(steps, -1)
    size = flat.shape[1]
    idx = np.flatnonzero(flat)
    counts = flat.reshape(-1)[idx].astype(np.int64)
    if (counts < 0).any():
        raise DataError("tonic's frames hold negative counts: the dataset's polarity field is "
                        "not 0 / 1")
    cells = np.repeat(idx % size, counts).astype(np.int32)
    per_frame = np.bincount(idx // size, weights=counts, minlength=steps).astype(np.int64)
    return cells, np.concatenate([[0], np.cumsum(per_frame)]).astype(np.int64)


def _pick(n: int, limit: int | None) -> np.ndarray:
    """Indices of a set's samples: all, or ``limit`` evenly spaced (every class is kept, since
    tonic lists the samples class by class)."""
    if not limit or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, int(limit)).round().astype(np.int64))


def _key(spec: TonicSet, root: Path, cfg: Any) -> str:
    h = hashlib.sha256()
    h.update(f"{spec.name};tonic {_tonic().__version__};f{CACHE_FORMAT};d{cfg.denoise_us};"
             f"s{int(cfg.downsample)};w{int(cfg.window_us)};n{cfg.n_time_bins};"
             f"l{cfg.limit_samples};".encode())
    base = root / spec.name
    for folder in spec.folders:
        for path in _files(spec, root, folder):
            st = path.stat()
            h.update(f"{path.relative_to(base)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _frame_sets(sets: list[Any], cfg: Any, spec: TonicSet) -> ClassSamples:
    """Frame every (limited) sample of ``sets`` through tonic's transforms, sets one after
    the other, into one :class:`ClassSamples`."""
    tf, shape = transform(cfg, tuple(_tonic_class(spec.name).sensor_size))
    cells, offsets, starts, labels = [], [np.zeros(1, np.int64)], [0], []
    events = 0
    for ds in sets:
        for i in _pick(len(ds), cfg.limit_samples):
            ev, target = ds[int(i)]
            if len(ev):
                c, o = frames_to_cells(tf(ev))
            else:  # no events (or none left by Denoise): empty frames
                c, o = np.zeros(0, np.int32), np.zeros((cfg.n_time_bins or 1) + 1, np.int64)
            cells.append(c)
            offsets.append(o[1:] + events)
            events += len(c)
            starts.append(starts[-1] + len(o) - 1)
            labels.append(int(target))
    return ClassSamples(np.concatenate(cells), np.concatenate(offsets),
                        np.asarray(starts, np.int64), np.asarray(labels, np.int64), shape, [])


def _names(sets: list[Any], cfg: Any, spec: TonicSet, root: Path) -> list[str]:
    out = []
    for folder, ds in zip(spec.folders, sets):
        base = _set_dir(spec, root, folder)
        for i in _pick(len(ds), cfg.limit_samples):
            item = ds.data[int(i)]
            out.append(str(Path(item).relative_to(base)) if isinstance(item, str)
                       else f"{folder or spec.name}[{int(i)}]")
    return out


def build_tonic(cfg: Any, seed: int = 0, num_classes: int | None = None,
                classes: list[str] | None = None) -> ClassBundle:
    """The tonic dataset ``cfg.dataset`` from ``cfg.root``, framed, cached and in its roles
    (module docstring). ``num_classes`` (task.num_classes) must match the dataset;
    ``classes`` (evaluating a checkpoint) must be the dataset's."""
    spec = TONIC_SETS.get(str(cfg.dataset))
    if spec is None:
        raise DataError(f"data.dataset={cfg.dataset} is not a tonic dataset snnexp reads: use "
                        f"one of {', '.join(TONIC_SETS)}")
    root = absolute(cfg.root)
    problem = layout_problem(spec, root)
    if problem is not None and not cfg.download:
        raise DataError(f"{spec.name} not found: {problem}; tonic reads "
                        f"{_expected(spec, root)}; {_fetch_hint(spec, root)}, or set data.root "
                        f"to the folder that holds {spec.name}/")
    names = class_names(spec.name)
    if num_classes is not None and int(num_classes) != len(names):
        raise DataError(f"task.num_classes={num_classes} but {spec.name} has {len(names)} "
                        f"classes: set task.num_classes={len(names)} (or null)")
    if classes is not None and list(classes) != names:
        raise DataError(f"the checkpoint's classes ({', '.join(classes)}) are not "
                        f"{spec.name}'s: evaluate it on the data it was trained on")
    sets = [open_set(spec, root, train=(i == 0), download=bool(cfg.download))
            for i in range(len(spec.folders))]
    for folder, ds, full in zip(spec.folders, sets, spec.full):
        d = _set_dir(spec, root, folder)
        missing = sorted(set(range(len(names))) - {int(t) for t in ds.targets})
        if missing:
            raise DataError(f"{spec.name} in {d}/ is incomplete: no sample of class "
                            f"{', '.join(names[m] for m in missing)}; tonic reads "
                            f"{_expected(spec, root)}; {_fetch_hint(spec, root)}")
        if len(ds) < full:
            log.warning("%s: %s/ holds %d of the full set's %d samples (a subset)",
                        spec.name, d, len(ds), full)
    entry = absolute(cfg.cache_dir) / f"tonic-{spec.name}-{_key(spec, root, cfg)}.npz"
    sample_names = _names(sets, cfg, spec, root)
    samples = read_entry(entry, sample_names) if cfg.cache else None
    if samples is None:
        log.info("framing %s through tonic's transforms (cached in %s)", spec.name, entry)
        samples = _frame_sets(sets, cfg, spec)
        samples.names = sample_names
        if cfg.cache:
            write_entry(entry, samples)
    n_train = len(_pick(len(sets[0]), cfg.limit_samples))
    own = np.arange(n_train)
    split = _split(samples.labels[own], list(cfg.split), seed, (True, not spec.official_test))
    roles = {r: [int(own[i]) for i in split[r]] for r in split}
    if spec.official_test:
        roles["test"] = list(range(n_train, len(samples)))
    window = 0 if cfg.n_time_bins is not None else int(cfg.window_us)
    data = ClassBundle(samples, names, roles, window, cfg.batch_size, seed,
                       [str(root / spec.name)])
    log.info("%s: %d classes, %d / %d / %d samples (train / val / test), %d-%d frames of "
             "%s x %s", spec.name, len(names), *(len(roles[r]) for r in ("train", "val", "test")),
             int(samples.lengths.min()), int(samples.lengths.max()), *samples.shape[1:])
    return data
