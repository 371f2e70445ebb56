"""Plotly figures for the lead pages, built from calib results (no Streamlit, testable).

Plotly renders a subset of HTML (``<b>``, ``<a href>``, ``<br>``) in titles, axis and tick labels,
legends, hover text and annotations: every name from the data (dimension, segment, judge, model)
goes through ``safetext.html`` first."""

from __future__ import annotations

import textwrap

import numpy as np
import plotly.graph_objects as go

from calib.safetext import html as _h, one_line


def _name(value: object, limit: int = 40) -> str:
    """A name from the data for a Plotly label: one line, cut to ``limit`` characters, escaped."""
    return _h(one_line(value, limit))


TITLE_WIDTH = 46  # characters a title line holds in a chart half a 1280 px page wide (about 450 px)


def _title(text: str, top: int = 20) -> tuple[dict, int]:
    """A chart title from plain text (names already ``one_line``-cut, not escaped): wrapped into
    lines of at most ``TITLE_WIDTH`` characters, each escaped (so no wrap can split an entity), so a
    long title never runs past the chart's edge; and the top margin those lines need (``top`` px
    more for what sits under the title, e.g. a Play button)."""
    lines = textwrap.wrap(text, TITLE_WIDTH, break_long_words=True, break_on_hyphens=False) or [""]
    # Plotly centres the title in the top margin (an explicit yanchor "top" cut a wrapped title's
    # first line off in the browser); the extra 40 px under it hold a note at the plot's top edge
    return {"text": "<br>".join(_h(line) for line in lines), "x": 0.01, "xanchor": "left"}, 40 + 22 * len(lines) + top


FORECAST_SHARE = 0.5  # the forecast is drawn for at most half the labels so far (at least its first step)


def shrinkage_figure(history: list[dict], dimension: str, forecast: dict | None = None,
                     margin: float | None = None, candidate: str | None = None) -> go.Figure:
    """The 95% interval of Delta against the number of labelled items, one point per recorded fit;
    with ``forecast`` (one entry of ``engine.forecast_project``) the expected interval after more
    labels as a short continuation (at most ``FORECAST_SHARE`` of the labels so far, so the x-axis
    stays on the labels so far), the target width and the labels needed to reach it (a line when it
    falls inside the plot, else a note). ``candidate``: that candidate's Delta only."""
    rows = sorted((h for h in history if h["dimension"] == dimension and candidate in (None, h.get("candidate"))),
                  key=lambda h: (h["n_labels"], h["fit_id"]))
    x = [h["n_labels"] for h in rows]
    # numpy arrays, not lists: Plotly validates a list element by element (45 ms a figure at the
    # ~2,000 fits of a live project at 2,000 labels; 4 ms as arrays), the values are the same
    xa = np.array(x, dtype=np.int64)
    lo, hi, mean = (np.array([h[k] for h in rows], dtype=float) for k in ("lo", "hi", "mean"))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=np.concatenate([xa, xa[::-1]]), y=np.concatenate([hi, lo[::-1]]),
                             fill="toself", mode="lines", line={"width": 0}, name="95% interval", hoverinfo="skip",
                             fillcolor="rgba(99, 110, 250, 0.25)"))
    fig.add_trace(go.Scatter(
        x=xa, y=mean, mode="lines+markers", name="posterior mean",
        error_y={"type": "data", "symmetric": False, "array": hi - mean,
                 "arrayminus": mean - lo, "thickness": 1, "width": 2}))
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    if margin is not None:
        fig.add_hline(y=-margin, line_dash="dash", line_color="red", annotation_text=f"-margin ({margin:g})",
                      annotation_position="bottom left")
    title, top = _title(f"{one_line(dimension, 40)}: 95% interval of Delta vs labels"
                        + (f" ({one_line(candidate, 40)})" if candidate else ""))
    x_end = x[-1] if x else None
    if forecast and rows:
        n0, m0 = rows[-1]["n_labels"], forecast["mean"]
        target = forecast.get("target_width")
        steps = forecast["steps"]
        if target:  # the forecast up to the first step that reaches the target width (the rest adds nothing)
            reach = next((i for i, st in enumerate(steps) if st["width"] <= target), len(steps) - 1)
            steps = steps[:reach + 1]
        # a short continuation: the x-axis stays on the labels so far (the forecast to +800 would squash them)
        steps = [st for st in steps if st["extra"] <= FORECAST_SHARE * n0] or steps[:1]
        fx = [n0] + [n0 + st["extra"] for st in steps]
        x_end = fx[-1]
        half = [forecast["width_now"] / 2] + [st["width"] / 2 for st in steps]
        fig.add_trace(go.Scatter(x=fx + fx[::-1], y=[m0 + h for h in half] + [m0 - h for h in half][::-1],
                                 fill="toself", mode="lines", line={"width": 1, "dash": "dash", "color": "orange"},
                                 fillcolor="rgba(255, 165, 0, 0.12)", name="forecast (expected 95% interval)",
                                 hoverinfo="skip"))
        need = forecast.get("labels_for_target_width")
        if need is not None and target:
            if need <= 0:
                fig.add_annotation(x=1, y=1, xref="paper", yref="paper", xanchor="right", yanchor="bottom",
                                   showarrow=False, text=f"target width {target:g} reached")
            elif need <= x_end - n0:
                fig.add_vline(x=n0 + need, line_dash="dot", line_color="orange",
                              annotation_text=f"width {target:g}: ~{need} more", annotation_position="top left")
            else:  # beyond the plotted continuation: said, not drawn
                fig.add_annotation(x=1, y=1, xref="paper", yref="paper", xanchor="right", yanchor="bottom",
                                   showarrow=False, text=f"width {target:g}: ~{need} more labelled items")
    if x:
        pad = 0.03 * max(1, x_end - x[0])
        fig.update_xaxes(range=[x[0] - pad, x_end + pad])
    fig.update_layout(title=title,
                      xaxis_title="labelled items", yaxis_title="Delta in pass rate (share of outputs)",
                      legend={"orientation": "h", "y": -0.3, "yanchor": "top"}, height=390 + top, margin={"t": top, "b": 110, "l": 60, "r": 20})
    return fig


def forest_figure(segment_diffs: list[dict], dimension: str, margin: float, candidate: str | None = None) -> go.Figure:
    """Per-segment Delta with its 95% interval, and the non-inferiority margin (``candidate``: its Delta only)."""
    rows = [d for d in segment_diffs if d["dimension"] == dimension and candidate in (None, d.get("candidate"))]
    fig = go.Figure(go.Scatter(
        x=[d["mean"] for d in rows], y=[_name(d["segment"], 50) for d in rows], mode="markers",
        error_x={"type": "data", "symmetric": False, "array": [d["hi"] - d["mean"] for d in rows],
                 "arrayminus": [d["mean"] - d["lo"] for d in rows]}, name="Delta"))
    fig.add_vline(x=-margin, line_dash="dash", line_color="red", annotation_text=f"-margin ({margin:g})")
    fig.add_vline(x=0, line_dash="dot", line_color="grey")
    title, top = _title(f"{one_line(dimension, 40)}: Delta by segment"
                        + (f" ({one_line(candidate, 40)})" if candidate else ""))
    fig.update_layout(title=title,
                      xaxis_title="Delta in pass rate (share of outputs)", yaxis_title="segment", yaxis_type="category",
                      yaxis_autorange="reversed", height=290 + top, margin={"t": top, "b": 40, "l": 80, "r": 20})
    return fig


def calibration_figure(curve: list[dict], judge: str, dimension: str) -> go.Figure:
    """SME pass rate (95% Wilson interval) against the judge's score, one line per model, in the
    curve's order (``diagnostics.calibration_curve``: the baseline first, then every candidate),
    the baseline's named "(baseline)" in the legend (its name may be cut: the mark must stay)."""
    fig = go.Figure()
    for m in dict.fromkeys(r["model"] for r in curve):
        rows = [r for r in curve if r["model"] == m]
        name = _name(m) + (" (baseline)" if rows[0].get("role") == "baseline" else "")
        fig.add_trace(go.Scatter(
            x=[r["score_mean"] for r in rows], y=[r["sme_pass_rate"] for r in rows], mode="lines+markers", name=name,
            error_y={"type": "data", "symmetric": False, "array": [r["hi"] - r["sme_pass_rate"] for r in rows],
                     "arrayminus": [r["sme_pass_rate"] - r["lo"] for r in rows]},
            text=[f"n = {r['n']}" for r in rows]))
    j, d = _name(judge, 30), _name(dimension, 30)
    title, top = _title(f"{one_line(judge, 30)} on {one_line(dimension, 30)}: SME pass rate by judge score")
    fig.update_layout(title=title,
                      xaxis_title=f"{j} score (judge's own units, bin mean)",
                      yaxis_title="SME pass rate (share of outputs)", yaxis_range=[0, 1.02], height=310 + top,
                      legend_title_text="Model", margin={"t": top, "b": 40, "l": 60, "r": 20})
    return fig


def replay_figure(replay: list[dict], dimension: str, margin: float | None = None,
                  candidate: str | None = None) -> go.Figure:
    """An animation of the label history: frame k shows the intervals of Delta up to replay step k
    (``candidate``: that candidate's Delta only; with several candidates, pass one)."""
    rows = sorted((r for r in replay if r["dimension"] == dimension and candidate in (None, r.get("candidate"))),
                  key=lambda r: r["step"])
    name = one_line(dimension, 40) + (f" ({one_line(candidate, 40)})" if candidate else "")
    if not rows:
        return go.Figure().update_layout(title=_title(f"{name}: no labels to replay")[0])

    def traces(upto):
        sub = [r for r in rows if r["step"] <= upto]
        x = [r["n_labels"] for r in sub]
        return [go.Scatter(x=x + x[::-1], y=[r["hi"] for r in sub] + [r["lo"] for r in sub][::-1], fill="toself",
                           mode="lines", line={"width": 0}, fillcolor="rgba(99, 110, 250, 0.25)", name="95% interval"),
                # error bars too: before Play the first frame is one fit, whose interval must still show
                go.Scatter(x=x, y=[r["mean"] for r in sub], mode="lines+markers", name="posterior mean",
                           error_y={"type": "data", "symmetric": False, "array": [r["hi"] - r["mean"] for r in sub],
                                    "arrayminus": [r["mean"] - r["lo"] for r in sub], "thickness": 1, "width": 4})]

    steps = sorted({r["step"] for r in rows})
    lo = min(r["lo"] for r in rows)
    hi = max(r["hi"] for r in rows)
    pad = 0.1 * (hi - lo + 1e-9)
    fig = go.Figure(data=traces(steps[0]), frames=[go.Frame(data=traces(k), name=str(k)) for k in steps])
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    if margin is not None:
        fig.add_hline(y=-margin, line_dash="dash", line_color="red")
    title, top = _title(f"{name}: replay of the label history", top=30)  # the Play button sits under it
    fig.update_layout(
        title=title, xaxis_title="labelled items",
        yaxis_title="Delta in pass rate (share of outputs)", height=290 + top,
        xaxis_range=[0, max(r["n_labels"] for r in rows) * 1.05], yaxis_range=[lo - pad, hi + pad],
        updatemenus=[{"type": "buttons", "showactive": False, "x": 0, "y": 1.02, "yanchor": "bottom", "xanchor": "left",
                      "buttons": [{"label": "Play", "method": "animate",
                                   "args": [None, {"frame": {"duration": 600, "redraw": True}, "fromcurrent": True}]}]}],
        margin={"t": top, "b": 40, "l": 60, "r": 20})
    return fig
