"""`snnexp <command> [hydra overrides]`: a small dispatcher over one Hydra app per command.

Hydra has no subcommands, so the first argument picks the command's primary config
(conf/<command>.yaml) and the rest goes to Hydra unchanged (-m, --help, --cfg job, overrides...).
Only the standard library and Hydra are imported here; torch, spikingjelly and wandb are
imported inside the command functions, so `snnexp --help` answers at once.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIG_PACKAGE = "snnexp.conf"

# command -> (module, function, one-line help). The function takes the composed DictConfig.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("snnexp.commands.train", "train_command", "train an SNN (TBPTT) and evaluate it"),
    "evaluate": ("snnexp.commands.evaluate", "evaluate_command",
                 "evaluate a checkpoint on a test sequence: metrics, predictions, plots"),
    "simulate": ("snnexp.commands.simulate", "simulate_command",
                 "write the built-in simulated recording as an AEDAT4 file"),
    "summarize": ("snnexp.commands.summarize", "summarize_command",
                  "table, CSV and chart of a sweep's results"),
    "view": ("snnexp.commands.view", "view_command",
             "render a recording (and a checkpoint's predictions) as a video"),
    "infer": ("snnexp.commands.infer", "infer_command",
              "run a checkpoint on a file, camera or network stream, one step per window"),
    "export": ("snnexp.commands.export", "export_command",
               "export a checkpoint as a per-step TorchScript / ONNX / NIR model"),
}

# Commands that run the network: they get the allocator settings below.
_HEAVY = {"train", "evaluate", "infer", "view"}

# glibc keeps freed memory instead of returning it to the OS (and faulting it in again on
# every large allocation): several times faster for the large activations of a chunked SNN.
ALLOCATOR_ENV = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(8 << 30),
    "MALLOC_TOP_PAD_": str(1 << 30),
}
_REEXEC_MARK = "SNNEXP_ALLOCATOR_SET"

USAGE = """usage: snnexp <command> [-m] [hydra overrides ...]

Config-driven experiments training spiking neural networks on event-camera recordings.

commands:
{commands}

examples:
  snnexp train                                   # built-in simulated recording, default model
  snnexp train model=plain norm=rms optimizer.lr=3e-4
  snnexp train -m model=sew,plain,spiking norm=bn,rms,mul
  snnexp train experiment=reference data.paths=[/data/rec.aedat4]
  snnexp train task=classification data=tonic data.dataset=NMNIST data.root=/data/tonic
  snnexp evaluate ckpt=outputs/train/runs/<run>/checkpoints/best.pt
  snnexp simulate output=data/sim.aedat4 sim.duration_s=30
  snnexp summarize outputs/train/multiruns/<sweep>

`snnexp <command> --help` lists the config groups and options of a command.
Add debug=true to any command for full tracebacks."""

# ``debug=true`` is a flag of the command line, not a config key: the config group ``debug``
# (debug=default, the smoke-run overlay) owns that name in Hydra. The flag travels to the
# command runner (and to launcher worker processes) in this variable.
DEBUG_ENV = "SNNEXP_DEBUG"
_BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False,
               "on": True, "off": False}


def usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = [f"  {name.ljust(width)}  {spec[2]}" for name, spec in COMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def _maybe_reexec_with_allocator(command: str) -> None:
    """Re-exec once with the allocator variables set (they only act at process start)."""
    if command not in _HEAVY or os.environ.get(_REEXEC_MARK):
        return
    if sys.platform != "linux" or any(k in os.environ for k in ALLOCATOR_ENV):
        return
    env = dict(os.environ, **ALLOCATOR_ENV, **{_REEXEC_MARK: "1"})
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", "snnexp", *sys.argv[1:]], env)
    except OSError:
        return  # carry on with the default allocator


def _user_config_dir() -> list[str]:
    """A ./conf folder of the user's (not the package's own) extends the search path."""
    user = Path.cwd() / "conf"
    if not user.is_dir():
        return []
    import importlib.resources as resources

    try:
        pkg = Path(str(resources.files(CONFIG_PACKAGE)))
        if pkg.resolve() == user.resolve():
            return []
    except (ModuleNotFoundError, TypeError):
        pass
    return ["--config-dir", str(user)]


def _secondary_rank_overrides() -> list[str]:
    """torchrun ranks > 0 keep Hydra's run folder out of outputs/ (rank 0 writes the run)."""
    from snnexp.commands.runner import secondary_rank

    if not secondary_rank():
        return []
    import tempfile

    scratch = tempfile.mkdtemp(prefix=f"snnexp-rank{os.environ['RANK']}-")
    return [f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]


def _load(command: str) -> Callable[[Any], Any]:
    import importlib

    module, func, _ = COMMANDS[command]
    return getattr(importlib.import_module(module), func)


def split_debug_flag(argv: list[str]) -> tuple[list[str], bool]:
    """Take ``debug=true|false`` (also 1/0, yes/no, on/off) out of ``argv``; the last one wins.

    ``debug=default`` (a config group option) stays in ``argv``.
    """
    rest, debug = [], False
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") == "debug" and value.lower() in _BOOL_WORDS:
            debug = _BOOL_WORDS[value.lower()]
        else:
            rest.append(arg)
    return rest, debug


def run_hydra(command: str, argv: list[str]) -> Any:
    """Run ``command`` as a Hydra app with ``argv`` as its command line."""
    import hydra

    from snnexp.config.resolvers import record_sweep_keys
    from snnexp.config.store import register_schemas

    argv, debug = split_debug_flag(argv)
    user_full_error = os.environ.get("HYDRA_FULL_ERROR")
    debug = debug or user_full_error == "1"
    register_schemas()
    record_sweep_keys(argv)

    @hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_PACKAGE}", config_name=command)
    def _app(cfg: Any) -> Any:
        from snnexp.commands.runner import run_command

        return run_command(command, cfg, _load(command))

    saved = sys.argv
    sys.argv = [f"snnexp-{command}", *_user_config_dir(), *argv, *_secondary_rank_overrides()]
    # Let Hydra raise instead of printing its own multi-line report; we print one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    os.environ[DEBUG_ENV] = "1" if debug else "0"
    try:
        return _app()
    except BrokenPipeError:  # `snnexp train --help | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as exc:
        if debug:
            raise
        print(f"snnexp {command}: error: {one_line(exc, command)}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        sys.argv = saved
        os.environ.pop(DEBUG_ENV, None)
        if user_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = user_full_error


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def one_line(exc: BaseException, command: str = "train") -> str:
    """Hydra/OmegaConf composition errors as one line naming the key and the fix."""
    from snnexp.config.keys import type_error_message, unknown_key_message

    if isinstance(exc, OSError) and exc.filename:  # Hydra could not create the run directory
        return (f"cannot create the output directory '{exc.filename}' ({exc.strerror}): choose "
                "a writable one with hydra.run.dir=PATH or paths.log_dir=PATH")
    chain = _chain(exc)
    text = str(exc)
    unknown = re.search(r"Could not override '([^']+)'\.", text)
    if unknown and "No match in the defaults list" in text:
        return (f"'{unknown.group(1)}' is not a setting of snnexp {command}: drop it "
                f"(snnexp {command} --help lists the settings)")
    if unknown:
        return unknown_key_message(unknown.group(1), command)
    merging = re.search(r"Error merging override (\S+?)=(.*)$", text.splitlines()[0])
    if merging:
        key, value = merging.group(1).lstrip("+~"), merging.group(2)
        causes = [str(c).splitlines()[0] for c in chain[1:] if str(c)]
        if any("not in" in c or "Key '" in c and "not in" in c for c in causes):
            return unknown_key_message(key, command)
        return type_error_message(key, value, command)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Set the environment variable",
                                                       "Config search path", "provider="))]
    if "Available options" in text:
        head = [ln for ln in lines if not ln.startswith("Available options")]
        first = head[0] if head else ""
        return f"{first}; available options: {', '.join(head[1:])}"
    msg = "; ".join(lines[:3]) if lines else type(exc).__name__
    return msg


def _positional_dirs(args: list[str]) -> list[str]:
    """``snnexp summarize DIR [DIR ...]`` is short for ``dirs=[DIR,...]``."""
    dirs = [a for a in args
            if not a.startswith("-") and ("=" not in a or Path(a).exists())]
    if not dirs:
        return args
    rest = [a for a in args if a not in dirs]
    quoted = ",".join("'" + d.replace("'", "\\'") + "'" for d in dirs)
    return [*rest, f"dirs=[{quoted}]"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `snnexp` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version"):
        from snnexp import __version__

        print(f"snnexp {__version__}")
        return 0
    command = args[0]
    if command not in COMMANDS:
        print(f"snnexp: error: unknown command '{command}'; choose one of: "
              f"{', '.join(COMMANDS)} (snnexp --help)", file=sys.stderr)
        return 2
    rest = args[1:]
    if command == "summarize":
        rest = _positional_dirs(rest)
    if argv is None:
        _maybe_reexec_with_allocator(command)
    run_hydra(command, rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
