"""Spiking networks that regress a value per time step from event frames (docs/METHOD.md section 2).

``build_network`` is what the trainer calls; ``Monitors`` records spike activity and norm
statistics without changing the model.
"""

from __future__ import annotations

from snnexp.models.factory import LayerFactory
from snnexp.models.monitors import Monitors
from snnexp.models.network import SNNRegressor, build_network, count_trainable_parameters

__all__ = ["LayerFactory", "Monitors", "SNNRegressor", "build_network",
           "count_trainable_parameters"]
