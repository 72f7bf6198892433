"""snnexp: config-driven experiments training spiking neural networks on event-camera data."""

__version__ = "0.1.0"
