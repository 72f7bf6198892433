"""Looking at recordings: event frames, labels and predictions rendered as video."""
