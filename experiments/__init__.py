"""Experiments: one script per result of the DIVA paper (run with python -m)."""
