"""Event-camera data: AEDAT4 recordings -> orientation labels -> cached, batched event frames."""
