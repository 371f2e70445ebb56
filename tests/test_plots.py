"""Figures for the lead pages: titles, axis labels with units, one point per recorded fit."""

from calib.insight import plots


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


def test_shrinkage_figure_with_forecast():
    hist = [{"dimension": "style", "n_labels": n, "fit_id": i, "mean": 0.05, "lo": 0.05 - w, "hi": 0.05 + w}
            for i, (n, w) in enumerate([(50, 0.1), (100, 0.06)])]
    fc = {"mean": 0.05, "width_now": 0.12, "target_width": 0.05, "labels_for_target_width": 180,
          "steps": [{"extra": k, "width": w} for k, w in [(50, 0.1), (100, 0.08), (200, 0.048), (400, 0.03)]]}
    fig = plots.shrinkage_figure(hist, "style", fc, margin=0.02)
    band = fig.data[2]
    assert band.name.startswith("forecast")
    assert max(band.x) == 100 + 50  # a short continuation: at most half the labels so far
    assert fig.layout.xaxis.range[1] < 160  # the x-axis stays on the labels so far (not stretched to +400)
    assert any("~180 more" in (a.text or "") for a in fig.layout.annotations)  # beyond the plot: said
    long = [{**h, "n_labels": 10 * h["n_labels"]} for h in hist]  # 1,000 labels: up to the target step only
    fig = plots.shrinkage_figure(long, "style", fc, margin=0.02)
    assert max(fig.data[2].x) == 1000 + 200  # stops at the first step that reaches the target width
    fig = plots.shrinkage_figure(hist, "style", {**fc, "labels_for_target_width": 0}, margin=0.02)
    assert any("reached" in (a.text or "") for a in fig.layout.annotations)


def test_calibration_and_replay_figures_have_titles_and_axes():
    curve = [{"model": m, "bin": b, "score_mean": b / 4, "score_lo": 0, "score_hi": 1, "n": 10,
              "sme_pass_rate": 0.2 + 0.2 * b, "lo": 0.1 + 0.2 * b, "hi": 0.3 + 0.2 * b} for m in ("a", "b") for b in range(4)]
    fig = plots.calibration_figure(curve, "judge-x", "style")
    assert len(fig.data) == 2 and "judge-x" in fig.layout.title.text
    assert "score" in fig.layout.xaxis.title.text and "share of outputs" in fig.layout.yaxis.title.text
    rep = [{"step": s, "n_labels": 20 * (s + 1), "dimension": "style", "mean": 0.0, "lo": -0.2 / (s + 1),
            "hi": 0.2 / (s + 1)} for s in range(4)]
    fig = plots.replay_figure(rep, "style", 0.02)
    assert len(fig.frames) == 4 and list(fig.frames[-1].data[1].x) == [20, 40, 60, 80]
    assert list(fig.data[1].error_y.array) == [0.2]  # before Play: the first fit with its interval, not a bare dot
    assert fig.layout.xaxis.title.text == "labelled items" and "share of outputs" in fig.layout.yaxis.title.text


def test_names_from_the_data_are_escaped_in_every_label():
    """Plotly renders <b>, <a href> and <br> in titles, ticks, legends and hover: names from the data
    must arrive escaped (and with bidi controls visible)."""
    import json

    bad = '\u202e<b>x</b><a href="http://127.0.0.1:9/p">l</a>'
    hist = [{"dimension": bad, "n_labels": 50, "fit_id": 1, "mean": 0.0, "lo": -0.1, "hi": 0.1}]
    seg = [{"dimension": bad, "segment": s, "mean": 0.0, "lo": -0.1, "hi": 0.1} for s in (bad, "1", "2")]
    curve = [{"model": bad, "bin": 0, "score_mean": 0.5, "score_lo": 0, "score_hi": 1, "n": 3,
              "sme_pass_rate": 0.5, "lo": 0.2, "hi": 0.8}]
    rep = [{"step": 0, "n_labels": 20, "dimension": bad, "mean": 0.0, "lo": -0.2, "hi": 0.2}]
    figs = [plots.shrinkage_figure(hist, bad, None, 0.02), plots.forest_figure(seg, bad, 0.02),
            plots.calibration_figure(curve, bad, bad), plots.replay_figure(rep, bad, 0.02),
            plots.replay_figure([], bad)]
    for fig in figs:
        text = json.dumps(fig.to_plotly_json())
        assert "<b>" not in text and "<a " not in text and "\\u202e" not in text.lower(), text[:300]
        assert "&lt;b&gt;x&lt;/b&gt;" in text and "[U+202E]" in text
    forest = figs[1]
    assert forest.layout.yaxis.type == "category"  # segments "1", "2" stay names, not numbers
