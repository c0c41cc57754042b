"""The daemon and the command-line entry points: the composition root."""
