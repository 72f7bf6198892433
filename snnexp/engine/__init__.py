"""Fast execution of chunked SNNs on CPU: native fused BatchNorm + LIF kernels, and
convolutions of spike inputs by table lookup.

:mod:`snnexp.engine.native` builds and loads the kernels (cached, pure-PyTorch fallback),
:mod:`snnexp.engine.functions` wraps them as autograd functions. The model modules
(:class:`snnexp.models.neurons.SpikingNeuron`, :class:`snnexp.models.norms.BatchNorm2d`) use
them for chunks; ``SNNRegressor.configure_engine`` switches fusion and channels_last.
"""

from __future__ import annotations

from snnexp.engine.native import available, set_enabled

__all__ = ["available", "set_enabled"]
