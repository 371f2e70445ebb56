"""A project whose every text field and name is hostile: markdown images, HTML tags, <script>,
links, :material: icons and bidi overrides pointing at ``127.0.0.1:PORT`` (a listener a browser
test starts). Built through the importer, like a user's files; used by the AppTest and browser tests.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from calib.data import ingest, store
from calib.review import queue, users


def payload(tag: str, port: int) -> str:
    """Every construct that would load, link, run or reorder if interpreted, tagged for the listener."""
    base = f"http://127.0.0.1:{port}"
    return (f"{tag}![x]({base}/pixel-{tag}.png)<img src={base}/img-{tag}.png onerror=alert(1)>"
            f"<script>alert('{tag}')</script><a href={base}/a-{tag}>link</a>[l]({base}/l-{tag})"
            f"<b>b</b>**s**:material/home:\u202egnp.exe")


def name_payload(tag: str) -> str:
    """For names that cannot hold ':' (a dimension ends the ``judge:<judge>:<dimension>`` column):
    relative URLs, which would load from the app itself (the browser test watches for 'pixel')."""
    return (f"{tag}![x](/pixel-{tag}.png)<img src=/img-{tag}.png onerror=alert(1)><script>alert(1)</script>"
            f"<a href=/a-{tag}>link</a><b>b</b>\u202egnp.exe")


def build(path: Path, port: int, n_items: int = 40, n_labelled: int = 30, sme: str | None = None) -> dict:
    """Create the project in the database ``path``; returns the names used (models, dims, ...)."""
    rng = random.Random(3)
    models = [payload("base", port), payload("cand", port)]
    dims = [name_payload("dimA"), name_payload("dimB")]
    judges = [payload("judge1", port), payload("judge2", port)]
    segments = [payload("segEU", port), payload("segNA", port)]
    items = [f"q{i:03d}" + payload(f"item{i}", port) for i in range(n_items)]
    rows = []
    for i, item in enumerate(items):
        for m in models:
            out = payload(f"out{i}", port)
            if m == models[1]:  # every candidate output is ~50 KB: it must scroll in its box
                out = out + "\n" + ("A very long output line that goes on. " * 1400)
            r = {"item_id": item, "model": m, "segment": segments[i % 2], "topic": payload("topic", port),
                 "prompt": payload(f"prompt{i}", port), "context": payload("ctx", port),
                 "reference": payload("ref", port), "output": out, "latency_ms": 100.0 + i}
            for j in judges:
                for d in dims:
                    r[f"judge:{j}:{d}"] = float(rng.random() < 0.7)
                    r[f"rationale:{j}:{d}"] = payload("why", port)
            rows.append(r)
    folder = path.parent
    outputs = folder / "hostile_outputs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), outputs)
    labels = []
    annotators = [payload("annA", port), payload("annB", port)]
    for i, item in enumerate(items[:n_labelled]):
        for a in annotators[: 1 + (i % 3 == 0)]:
            for m in models:
                for d in dims:
                    labels.append({"item_id": item, "model": m, "dimension": d,
                                   "verdict": "pass" if rng.random() < 0.7 else "fail", "annotator": a,
                                   "note": payload("note", port)})
    label_file = folder / "hostile_labels.parquet"
    pq.write_table(pa.Table.from_pylist(labels), label_file)

    con = store.connect(path)
    ingest.import_file(con, outputs, baseline=models[0])
    ingest.import_labels(con, label_file)
    store.set_settings(con, show_judges_to_sme=True)
    users.add_user(con, "adm", "admin", "adm-password")
    users.add_user(con, "lea", "lead", "lea-password")
    sme = sme or "sme_ana@www.example.com"  # user names are restricted; this one would autolink as an email
    users.add_user(con, sme, "sme", "sme-password")
    users.save_guidelines(con, f"# Rubric\n**Pass** when correct. ![g](http://127.0.0.1:{port}/pixel-guide.png)"
                               f" <img src=http://127.0.0.1:{port}/img-guide.png> <script>alert(1)</script> $x$",
                          "adm")
    # a flagged and a skipped item, with hostile reasons (the Home page lists flags)
    queue.refill(con, 10, seed=1)
    lease = queue.next_item(con, annotators[0])
    queue.flag(con, lease.lease_id, annotators[0], payload("flag", port))
    lease = queue.next_item(con, annotators[0])
    queue.skip(con, lease.lease_id, annotators[0], payload("skip", port))
    con.close()
    return {"models": models, "dims": dims, "judges": judges, "segments": segments, "items": items, "sme": sme,
            "annotators": annotators}


# What would be interpreted if a string from the data reached Streamlit's markdown unescaped.
MD_MARKERS = ("![x](", "<img", "<script", "<a href", "<b>", "**s**", ":material/home:", "[l](", "\u202e")
HTML_MARKERS = ("<img", "<script>alert", "<a href", "<b>", "\u202e")
_MD_KINDS = ("markdown", "caption", "title", "header", "subheader", "warning", "info", "error", "success", "toast")


def _occurrences(text: str, sub: str) -> list[int]:
    out, i = [], text.find(sub)
    while i >= 0:
        out.append(i)
        i = text.find(sub, i + 1)
    return out


def audit(at) -> list[str]:
    """Problems on an AppTest page: a marker in any markdown context (texts, metric, widget and
    expander labels, radio options), a bidi override in any plain text, code, table or option, a tag
    in st.html markup. Empty when every hostile string was shown as text."""
    found = []

    def check(kind, text, markers):
        if not isinstance(text, str):
            return
        for m in markers:  # an occurrence not preceded by a backslash (markdown's escape) is live
            if any(i == 0 or text[i - 1] != "\\" for i in _occurrences(text, m)):
                found.append(f"{kind}: {m!r} in {text[:160]!r}")

    for kind in _MD_KINDS:
        for el in at.get(kind):
            check(kind, getattr(el, "value", None), MD_MARKERS)
    for el in at.metric:
        for part in (el.label, el.value, getattr(el.proto, "delta", "")):
            check("metric", part, MD_MARKERS)
    for kind in ("radio", "toggle", "checkbox", "text_input", "text_area", "button", "selectbox"):
        for el in at.get(kind):
            check(kind, el.label, MD_MARKERS)
            for o in getattr(el, "options", []) or []:
                check(kind + " option", o, MD_MARKERS if kind == "radio" else ("\u202e",))
    for el in at.get("expander"):
        check("expander", getattr(el, "label", None) or getattr(el.proto, "label", ""), MD_MARKERS)
    for kind in ("text", "code"):
        for el in at.get(kind):
            check(kind, el.value, ("\u202e",))
    for el in at.get("dataframe"):
        df = el.value
        for c in df.columns:
            check("dataframe column", str(c), ("\u202e",))
            for v in df[c]:
                check("dataframe", v, ("\u202e",))
    for el in at.get("html"):
        body = el.value
        markup = body.split("<script>")[0]
        check("html", markup, HTML_MARKERS)
        if "<script>" in body:
            script = body.split("<script>", 1)[1].rsplit("</script>", 1)[0]
            check("html script", script, ("</script", "<img", "<script", "<a href", "<b>", "\u202e"))
    return found
