"""Figures for the lead pages: titles, axis labels with units, one point per recorded fit."""

from calib import plots


def test_shrinkage_and_forest_figures():
    hist = [{"dimension": "style", "n_labels": n, "fit_id": i, "mean": 0.1, "lo": 0.1 - w, "hi": 0.1 + w}
            for i, (n, w) in enumerate([(50, 0.2), (100, 0.1), (200, 0.05)])]
    fig = plots.shrinkage_figure(hist + [{**hist[0], "dimension": "other"}], "style")
    assert fig.layout.title.text.startswith("style") and "labelled items" in fig.layout.xaxis.title.text
    assert "share of outputs" in fig.layout.yaxis.title.text
    assert list(fig.data[1].x) == [50, 100, 200]
    seg = [{"dimension": "style", "segment": s, "mean": 0.0, "lo": -0.1, "hi": 0.1} for s in ("eu", "na")]
    fig = plots.forest_figure(seg, "style", 0.02)
    assert list(fig.data[0].y) == ["eu", "na"] and fig.layout.xaxis.title.text.startswith("Delta")
