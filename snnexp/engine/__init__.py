"""How fast a network runs: everything the model itself does not decide.

:func:`prepare` swaps a plain network's layer groups for engine modules
(:mod:`snnexp.engine.modules`) configured for a backend (``trainer.engine``: auto | native |
torch). :mod:`snnexp.engine.native` builds and loads the C++ kernels (cached, PyTorch
fallback), :mod:`snnexp.engine.functions` wraps them as autograd functions and
:mod:`snnexp.engine.ops` applies them to the model's modules.
"""

from __future__ import annotations

from snnexp.engine.native import available
from snnexp.engine.prepare import BACKENDS, backend_of, prepare, resolve_backend

__all__ = ["BACKENDS", "available", "backend_of", "prepare", "resolve_backend"]
