"""Plotly figures for the lead pages, built from calib results (no Streamlit, testable)."""

from __future__ import annotations

import plotly.graph_objects as go


def shrinkage_figure(history: list[dict], dimension: str) -> go.Figure:
    """The 95% interval of Delta against the number of labelled items, one point per recorded fit."""
    rows = sorted((h for h in history if h["dimension"] == dimension), key=lambda h: (h["n_labels"], h["fit_id"]))
    x = [h["n_labels"] for h in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x + x[::-1], y=[h["hi"] for h in rows] + [h["lo"] for h in rows][::-1],
                             fill="toself", mode="lines", line={"width": 0}, name="95% interval", hoverinfo="skip",
                             fillcolor="rgba(99, 110, 250, 0.25)"))
    fig.add_trace(go.Scatter(x=x, y=[h["mean"] for h in rows], mode="lines+markers", name="posterior mean"))
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(title=f"{dimension}: Delta (candidate - baseline) as labels arrive",
                      xaxis_title="labelled items", yaxis_title="Delta in pass rate (share of outputs)",
                      height=340, margin={"t": 50, "b": 40, "l": 60, "r": 20})
    return fig


def forest_figure(segment_diffs: list[dict], dimension: str, margin: float) -> go.Figure:
    """Per-segment Delta with its 95% interval, and the non-inferiority margin."""
    rows = [d for d in segment_diffs if d["dimension"] == dimension]
    fig = go.Figure(go.Scatter(
        x=[d["mean"] for d in rows], y=[d["segment"] for d in rows], mode="markers",
        error_x={"type": "data", "symmetric": False, "array": [d["hi"] - d["mean"] for d in rows],
                 "arrayminus": [d["mean"] - d["lo"] for d in rows]}, name="Delta"))
    fig.add_vline(x=-margin, line_dash="dash", line_color="red", annotation_text=f"-margin ({margin:g})")
    fig.add_vline(x=0, line_dash="dot", line_color="grey")
    fig.update_layout(title=f"{dimension}: Delta by segment", xaxis_title="Delta in pass rate (share of outputs)",
                      yaxis_title="segment", height=320, margin={"t": 50, "b": 40, "l": 80, "r": 20})
    return fig
