"""Tiebreak: replace a production LLM with statistical confidence.

A plain Python package (no Streamlit): storage, import, sampling, the Bayesian calibration model,
forecasting, judges, the demo simulator and the CLI. The Streamlit pages only lay out what it
computes.
"""

__version__ = "0.1.0"
