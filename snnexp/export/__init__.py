"""Exporting a trained network as a per-step model ``(frame, *state) -> (angle, *state)``."""
