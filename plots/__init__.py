"""Figures from the experiment CSVs (python -m plots.make_figures --results results/<preset>)."""
