"""The ``tiebreak`` command line. Each command is a thin wrapper over a calib function.

The database comes from ``--db``, else ``$TIEBREAK_DB``, else the bundled demo database. Only an
existing Tiebreak database opens (``init``, ``import --new`` and ``demo`` create one), and every write
command reports what it wrote as read back from the file.
Errors meant for the user (bad input, a database locked by the app) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Sequence

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from calib.data import store  # noqa: E402 (calib.data.demo pulls in pandas and scipy: imported when needed)
from calib.errors import TiebreakError  # noqa: E402
from calib import safetext  # noqa: E402


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="an existing Tiebreak database (default: $TIEBREAK_DB, else the bundled demo "
                                "database); create one with `tiebreak init FILE` or `import FILE --db NEW --new`")


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# While the app holds the database (DuckDB: one process per file), reads go to a snapshot and
# writes say which page does the same thing.
READS = {"status", "labels export", "fit", "forecast", "plan", "report", "settings show", "judge report", "judge batches", "users list",
         "backup", "regressions"}
WRITE_PAGES = {
    "import": "upload the file on the Admin page (Imports tab)",
    "labels import": "upload the file on the Admin page (Imports tab)",
    "users add": "add or change users on the Admin page (Users tab)",
    "settings set": "change settings on the Admin page (Settings tab)",
    "queue": "SMEs are served from the queue on the Label page, which refills it",
    "judge run": "run judges on the Run judges page",
    "judge generate": "generate outputs on the Run judges page",
    "simulate": "run the simulated SME on the Demo page",
    "demo": "give a new --db path for a demo",
    "users email": "set e-mails on the Admin page (Users tab)",
    "regressions queue": "queue likely regressions on the Regressions page (Queue these for SMEs)",
}
NOT_STORED = {"fit": " (the fit is not stored: the Decision page refits and stores while the app runs)"}


def command_path(args) -> str:
    """``labels import``, ``status`` ... from parsed arguments."""
    sub = getattr(args, f"{args.command}_command", None)
    return f"{args.command} {sub}" if sub else args.command


def _open_db(args, read_only: bool = False, create: bool = False):
    """The project's database: an existing Tiebreak database only, unless ``create`` (``init``,
    ``import --new``, ``demo``). When another process (the app) holds it, a read command works on a
    fresh snapshot (said on stderr) and a write command stops with a pointer to the page."""
    import atexit
    import shutil
    import tempfile

    try:
        if store.resolve_db(args.db) == store.DEMO_DB:  # built on first use from the demo files
            from calib.data import demo

            return demo.open_db(args.db, read_only=read_only)
        return store.connect(args.db, read_only=read_only, create=create)
    except store.DatabaseLocked as exc:
        cmd = command_path(args)
        if cmd not in READS:
            where = WRITE_PAGES.get(cmd, "do the same from the app's pages")
            raise TiebreakError(f"{exc} `tiebreak {cmd}` writes, so while the app runs {where}; "
                                "or stop the app (Ctrl+C in its terminal) and run the command again.") from None
        folder = tempfile.mkdtemp(prefix="tiebreak-snapshot-")
        con, seconds = store.snapshot(exc.path, folder)
        atexit.register(shutil.rmtree, folder, True)
        atexit.register(con.close)
        print(f"tiebreak: the app (PID {exc.pid}) holds {exc.path}: read a snapshot copied just now in "
              f"{seconds:.2f} s{NOT_STORED.get(cmd, '')}", file=sys.stderr)
        return con


# --------------------------------------------------------------------------- commands


def read_back(args, con, what):
    """Close the command's connection and open the file it names afresh (read-only), so what a
    write command reports is what the file holds, not what the process believes it wrote; return
    ``what(fresh_connection)``."""
    con.close()
    fresh = store.connect(args.db, read_only=True, create=False)
    try:
        return what(fresh)
    finally:
        fresh.close()


def _counts(con) -> str:
    one = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
    return (f"{one('SELECT count(*) FROM items')} items, {one('SELECT count(*) FROM outputs')} outputs, "
            f"{one('SELECT count(*) FROM judge_scores')} judge scores, "
            f"{one('SELECT count(*) FROM pair_judge_prefs')} pairwise judge preferences, "
            f"{one('SELECT count(*) FROM labels') + one('SELECT count(*) FROM pair_labels')} labels")


def cmd_init(args) -> int:
    """A new, empty Tiebreak database (the only command besides ``import --new`` and ``demo`` that
    creates one)."""
    from pathlib import Path

    path = Path(args.path)
    if path.exists():
        what = ("a DuckDB database" if store.is_duckdb_file(path) else store.describe_file(path))
        raise TiebreakError(f"{path} already exists ({what}); give a new file name")
    args.db = str(path)
    con = _open_db(args, create=True)
    n = read_back(args, con, lambda c: c.execute("SELECT count(*) FROM _migrations").fetchone()[0])
    print(f"{path}: new empty Tiebreak database (schema version {n}, read back from the file); "
          f"next: `tiebreak import FILE --db {path}`")
    return 0


def _refuse_existing(args) -> None:
    path = store.resolve_db(args.db)
    if path.exists():
        raise TiebreakError(f"{path} already exists; --new creates a database: drop --new to import into it")


def cmd_import(args) -> int:
    from calib.data import evalformats, ingest

    # --add-model alone: accept any new model; --add-model NAME (repeatable): accept exactly those
    add_model = True if args.add_model and "*" in args.add_model else (args.add_model or False)
    allow = dict(add_model=add_model, add_judge=args.add_judge, add_dimension=args.add_dimension,
                 allow_new=args.allow_new, judged_sample=args.judged_sample)
    fmt = evalformats.detect(args.file) if args.format == "auto" else args.format
    conv = None
    if fmt in evalformats.FORMATS:  # another eval tool's file: reshaped, then the same importer
        conv = evalformats.convert(args.file, fmt, dimension=args.dimension or evalformats.DEFAULT_DIMENSION,
                                   model=args.model)
    elif args.model or args.dimension:
        raise TiebreakError(f"{args.file}: --model and --dimension apply to promptfoo, Inspect AI and DeepEval "
                            "files; a Tiebreak file names its models and dimensions in its rows and columns")
    if args.new:
        if not args.db:
            raise TiebreakError("--new needs --db PATH: the new database's file")
        _refuse_existing(args)
    con = _open_db(args, create=args.new)
    try:
        if conv is not None:
            lines = [conv.summary(),  # what became what, printed once the import has landed
                     evalformats.import_converted(con, conv, baseline=args.baseline, **allow).summary()]
        else:
            lines = [ingest.import_file(con, args.file, baseline=args.baseline, **allow).summary()]
    except BaseException:
        if args.new:  # bad input changes nothing: not even an empty new database is left behind
            con.close()
            path = store.resolve_db(args.db)
            for f in (path, path.with_name(path.name + ".wal")):
                f.unlink(missing_ok=True)
        raise
    print("\n".join(lines))
    print(f"{store.resolve_db(args.db)} now holds " + read_back(args, con, _counts) + " (read back from the file)")
    return 0


def cmd_labels_import(args) -> int:
    from calib.data import ingest

    con = _open_db(args)
    print(ingest.import_labels(con, args.file, source=args.source).summary())
    print(f"{store.resolve_db(args.db)} now holds " + read_back(args, con, _counts) + " (read back from the file)")
    return 0


def cmd_labels_export(args) -> int:
    from calib.data import ingest

    con = _open_db(args)
    n = ingest.export_labels(con, args.file)
    print(f"{args.file}: wrote {n} labels (full history, corrections included)")
    return 0


def cmd_status(args) -> int:
    con = _open_db(args, read_only=args.read_only)
    st = store.status(con)
    if args.json:
        _print_json(st)
        return 0
    print(f"database   {store.resolve_db(args.db)}")
    print(f"baseline   {st['baseline']}")
    print(f"candidates {', '.join(st['candidates']) or '-'}")
    print(f"dimensions {', '.join(st['dimensions']) or '-'}")
    print(f"items      {st['items']} in {st['segments']} segments")
    print(f"outputs    {st['outputs']} (" + ", ".join(f"{m}: {n}" for m, n in st["outputs_by_model"].items()) + ")")
    print(f"judges     {len({j['judge'] for j in st['judges']})} judges, {st['judge_scores']} scores, "
          f"{st['pair_judge_prefs']} pairwise preferences")
    for j in st["judges"]:
        print(f"  {j['judge']:<24} {j['dimension']:<16} {j['scores']}" + ("  (side by side)" if j.get("kind") == "side by side" else ""))
    if st["judged_sample"] is not None:  # a census prints nothing here
        from calib.data import phase1

        print(f"  {phase1.summary_line(st['judged_sample'])}")
    total = sum(x["labels"] for x in st["labels"])
    print(f"labels     {total} pointwise, {sum(x['labels'] for x in st['pair_labels'])} pairwise")
    for x in st["labels"] + st["pair_labels"]:
        print(f"  {x['dimension']:<16} {x['labels']} labels on {x['items']} items")
    print(f"fits       {st['fits']}")
    return 0


def cmd_regressions(args) -> int:
    """SME-confirmed flips, likely regressions among unlabelled items, pairwise baseline preferences;
    ``--queue K`` queues about K likely regressions as a lead-chosen batch (a write)."""
    from calib.insight import regressions as rg

    if args.queue:
        args.regressions_command = "queue"
    con = _open_db(args)
    s = store.get_settings(con)
    dims = [args.dimension] if args.dimension else s["dimensions"]
    cands = [args.candidate] if args.candidate else [m for m in store.models(con) if m != s["baseline"]]
    if not cands:
        raise TiebreakError("no candidate model: import outputs of a candidate first")
    top = args.top if args.top is not None else (20 if args.json else 3)
    prompts: dict[str, str] = {}  # for the text output's excerpts only

    def one(cand: str) -> dict:
        entry = {"candidate": cand, "dimensions": {}}
        for d in dims:
            flips = rg.sme_flips(con, d, cand)
            every = rg.likely_regressions(con, d, cand)
            lik = every.head(top)
            summary = rg.flip_summary(con, d, cand)
            e = {"flips": flips.to_dict("records"),
                 "by_segment": rg.flip_rates(con, d, "segment", cand).to_dict("records"),
                 "by_topic": rg.flip_rates(con, d, "topic", cand).to_dict("records"),
                 "likely_regressions": lik.to_dict("records"),
                 "summary": summary, "unlabelled_items": len(every),
                 "ranking_note": rg.ranking_note(summary["items"], every["p_regression"].to_numpy(),
                                                 int(s["min_decision_items"]))}
            if not args.json:
                prompts.update(rg.item_prompts(con, lik["item_id"].tolist()))
            if args.queue:
                b = rg.queue_likely_regressions(con, d, args.queue, cand)
                e["queued"] = {"batch_id": b.batch_id, "selected": b.selected, "expected": b.expected}
            entry["dimensions"][d] = e
        entry["pairwise_baseline_preferred"] = rg.pairwise_baseline_preferred(con, cand).to_dict("records")
        return entry

    # every candidate (or the one asked for); the first one's entries also at the top level, as before
    per = [one(c) for c in cands]
    out = {"baseline": s["baseline"], **per[0], "candidates": per}
    if args.queue:
        ids = [e["queued"]["batch_id"] for entry in per for e in entry["dimensions"].values()]
        n = read_back(args, con, lambda c: c.execute(
            "SELECT count(*) FROM queue WHERE list_contains(?, batch_id)", [ids]).fetchone()[0])
        print(f"read back from {store.resolve_db(args.db)}: {n} queued units in batch(es) "
              f"{', '.join(map(str, ids))}", file=sys.stderr)
    if args.json:
        _print_json(out)
        return 0
    for entry in per:
        print("\n".join(regressions_text(entry, s["baseline"], top, prompts)))
    return 0


def _pct(k: int, n: int) -> str:
    return f"{k} ({k / n:.1%})" if n else str(k)


def regressions_text(entry: dict, baseline: str, top: int, prompts: dict[str, str]) -> list[str]:
    """The text report of one candidate: per dimension the counts and rates, the rates per segment,
    the top SME-confirmed regressions and improvements with short excerpts of both outputs, the top
    likely regressions (with a warning while their ranking is not informative); then the items an
    SME preferred the baseline on. ``top`` applies to every list. Every string from the data goes
    through ``safetext`` (one line, control characters and escape sequences visible, cut)."""
    name, ex = safetext.one_line, safetext.excerpt
    more = lambda n: [f"    ... and {n - top} more (--top N shows more)"] if n > top else []  # noqa: E731
    lines = [f"== {name(entry['candidate'], 60)} vs {name(baseline, 60)} (baseline)"]
    for d, e in entry["dimensions"].items():
        sm = e["summary"]
        n = sm["items"]
        lines.append(f"{name(d, 60)}: {n} items labelled for both models by SMEs: {_pct(sm['regressions'], n)} "
                     f"regressions, {_pct(sm['improvements'], n)} improvements")
        segs = sorted(e["by_segment"], key=lambda r: (-r["regressions"], -r["items"], str(r["segment"])))
        if segs:
            lines.append("  by segment (regressions, improvements, of items labelled):")
            width = min(24, max(len(name(r["segment"], 24)) for r in segs))
            for r in segs[:top]:
                lines.append(f"    {name(r['segment'], 24):<{width}}  {_pct(int(r['regressions']), int(r['items'])):>12}  "
                             f"{_pct(int(r['improvements']), int(r['items'])):>12}  of {int(r['items'])}")
            lines += more(len(segs))
        for kind in ("regression", "improvement"):
            flips = [f for f in e["flips"] if f["flip"] == kind]
            if not flips:
                continue
            lines.append(f"  SME-confirmed {kind}s ({min(top, len(flips))} of {len(flips)}; "
                         f"baseline {'passed' if kind == 'regression' else 'failed'}, candidate "
                         f"{'failed' if kind == 'regression' else 'passed'}):")
            for f in flips[:top]:
                lines.append(f"    {name(f['item_id'], 24)}  {name(f['segment'], 16)}/{name(f['topic'], 16)}  "
                             f"baseline {ex(f['baseline_output'], 32)}  candidate {ex(f['candidate_output'], 32)}")
            lines += more(len(flips))
        lik = e["likely_regressions"]
        lines.append(f"  likely regressions ({len(lik)} of {e['unlabelled_items']} unlabelled items; "
                     "P(regression) from the judges ranks items, it is no calibrated chance):")
        if e["ranking_note"]:
            lines.append(f"    ({e['ranking_note']})")
        for x in lik[:top]:
            lines.append(f"    {name(x['item_id'], 24)}  {x['p_regression']:.2f}  {name(x['segment'], 16)}/"
                         f"{name(x['topic'], 16)}  prompt {ex(prompts.get(x['item_id'], ''), 50)}")
        lines += more(e["unlabelled_items"])
        if "queued" in e:
            lines.append(f"  queued batch {e['queued']['batch_id']}: {e['queued']['selected']} items")
    pref = entry["pairwise_baseline_preferred"]
    if pref:
        lines.append(f"side by side, an SME preferred the baseline ({min(top, len(pref))} of {len(pref)}):")
        for x in pref[:top]:
            strength = {2: "much better", 1: "slightly better"}.get(x["strength"], "better")
            lines.append(f"    {name(x['item_id'], 24)}  {name(x['dimension'], 16)}  {strength}  "
                         f"by {name(x['annotator'], 20)}" + (f"  note {ex(x['note'], 50)}" if isinstance(x["note"], str) and x["note"] else ""))
        lines += more(len(pref))
    return lines


def cmd_demo(args) -> int:
    from calib.data import demo

    con = _open_db(args, create=True)
    have = con.execute("SELECT count(*) FROM items").fetchone()[0]
    if have:
        raise TiebreakError(f"{store.resolve_db(args.db)} already holds {have} items; give a new --db path for a demo")
    if not 1 <= args.candidates <= len(demo.ALL_CANDIDATES):
        raise TiebreakError(f"--candidates must be between 1 and {len(demo.ALL_CANDIDATES)} (got {args.candidates})")
    demo.load_demo(con, args.items, args.seed, candidates=args.candidates)
    print(f"{store.resolve_db(args.db)}: demo with {args.items} items and {args.candidates} candidate(s) "
          f"(seed {args.seed}) loaded; hidden truth stored for the simulated SME")
    print("read back from the file: " + read_back(args, con, _counts))
    return 0


def cmd_settings_show(args) -> int:
    con = _open_db(args, read_only=args.read_only)
    _print_json(store.get_settings(con))
    return 0


def cmd_settings_set(args) -> int:
    con = _open_db(args)
    with store.transaction(con):
        store.set_settings(con, **{args.key: store.parse_setting(args.key, args.value)})
    value = read_back(args, con, lambda c: store.get_settings(c)[args.key])
    print(f"{args.key} = {json.dumps(value)} (read back from {store.resolve_db(args.db)})")
    return 0


def _fmt_ci(r: dict) -> str:
    return f"{r['mean']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]"


def cmd_fit(args) -> int:
    from calib.stats import engine, sequential

    con = _open_db(args)
    res = engine.fit_project(con, kind="fast" if args.fast else "nuts", margin=args.margin, seed=args.seed,
                             draws=args.draws)
    from calib.insight import worth

    res["judges_worth"] = worth.judges_worth(res)
    if args.json:
        _print_json(res)
        return 0
    print(f"{res['kind']} fit on {res['n_labels']} labelled items ({res['seconds']:.1f} s); "
          f"{engine.interval_words(res)}; margin {res['margin']}")
    if len(res["candidates"]) > 1:
        print(f"  {len(res['candidates'])} candidates: {res['multiplicity']}")
    print(f"  sign-off mode {res.get('signoff_mode', 'fixed')}: {sequential.rule_caption(res)}")
    for d in res["diffs"]:
        basis = sequential.row_basis(d, res)
        print(f"  {d['dimension']:<14} Delta {d['candidate']} - {d['baseline']}: {_fmt_ci(d)}  "
              f"P(not worse) = {d['p_noninferior']:.3f}" + (f"  {basis}" if basis else "")
              + f"  ->  {d['decision'].upper()}")
        if d.get("note"):
            print(f"  {'':<14} ({d['note']})")
    for dim, est in res.get("estimator", {}).items():
        how = ("design-consistent: the model's projection corrected by the labelled items' residuals"
               if est.get("estimator") == "design" else "the model alone (too few labelled items)")
        print(f"  {dim:<14} estimate: {how}; labels: {est.get('design') or 'none'}")
    for r in res["rates"]:
        if r["segment"] is None:
            print(f"  {r['dimension']:<14} pass rate {r['model']:<24} {r['mean']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]")
    if len(res["candidates"]) > 1:
        for r in res.get("p_best", []):
            print(f"  {r['dimension']:<14} P(best) {r['model']:<24} {r['p_best']:.3f}")
    for p in res["preference"]:
        print(f"  {p['dimension']:<14} win rate of {p['candidate']}: {p['mean']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]"
              + (f"  P(win rate >= {0.5 - res['margin']:g}) = {p['p_noninferior']:.3f}  ->  {p['decision'].upper()}"
                 if "decision" in p else ""))
        if p.get("note"):
            print(f"  {'':<14} ({p['note']})")
    for r in res["judges_worth"]:
        print(f"  judges' worth: {worth.worth_sentence(r)}")
    for w in res["warnings"]:
        print(f"  warning: {w}")
    return 0


def cmd_forecast(args) -> int:
    from calib.stats import engine

    try:
        extra = [int(x) for x in args.extra.split(",") if x.strip()]
    except ValueError:
        raise TiebreakError(f"--extra {args.extra!r}: give whole numbers separated by commas, e.g. 50,100,200") from None
    con = _open_db(args)
    res = engine.forecast_project(con, extra, target_width=args.target_width, margin=args.margin)
    if args.json:
        _print_json(res)
        return 0
    for f in res["forecasts"]:
        need = f["labels_for_target_width"]
        print(f"{f['dimension']:<14} width now {f['width_now']:.3f}; "
              f"labels for width {res['target_width']}: {need if need is not None else 'not reachable'}"
              f"  (basis: {f.get('basis', 'labels and judges')})")
        for st in f["steps"]:
            print(f"   +{st['extra']:<6} width {st['width']:.3f}   P(decision) {st['p_decision']:.2f}")
    return 0


def _fmt_design(d: dict | None, label_usd: float) -> list[str]:
    if d is None:
        return ["not possible within it"]
    judged = (f"judge {d['judged_items']:,} items ({d['judge_calls']:,} judge calls)" if d["judged"]
              else "no judges")
    return [f"{judged}, label {d['labelled_items']:,} items per candidate ({d['labels']:,} labels)",
            f"still to buy: {d['judge_calls_to_buy']:,} judge calls on {d['judged_items_to_buy']:,} items "
            f"(${d['judge_cost_usd']:,.2f}) + {d['labels_to_buy']:,} labels (${d['label_cost_usd']:,.2f}) "
            f"= ${d['cost_usd']:,.2f}",
            f"expected width {100 * d['width']:.1f} pp (binding: {safetext.one_line(d['binding']['dimension'], 60)}, "
            f"{safetext.one_line(d['binding']['candidate'], 60)}"
            f"{', win rate' if d['binding'].get('estimand') == 'win rate' else ''})"
            + (f"; chance of a decision {d['p_decision']:.0%}" if d.get("p_decision") is not None else "")
            + _planned_s2_e(d)]


def _planned_s2_e(d: dict) -> str:
    """The binding Delta's residual variance at the planned labels (the pilot's, its model error and
    small-sample protections faded: ``plan.Quantity.s2_e_at``)."""
    b = d["binding"]
    w = next((w for w in d["widths"] if w["dimension"] == b["dimension"] and w["candidate"] == b["candidate"]
              and w.get("estimand") == b.get("estimand")), {})
    return f"; S_e^2 at {d['labelled_items']:,} labelled items {w['s2_e_planned']:.4f}" if w.get("s2_e_planned") else ""


def cmd_plan(args) -> int:
    from calib.insight import plan

    if (args.budget is None) == (args.target_width is None):
        raise TiebreakError("give --budget USD or --target-width PP (one of them)")
    if args.budget is not None and not args.budget > 0:
        raise TiebreakError(f"--budget {args.budget:g}: give a positive amount in USD")
    if args.target_width is not None and not args.target_width > 0:
        raise TiebreakError(f"--target-width {args.target_width:g}: give a positive width in percentage points")
    con = _open_db(args, read_only=True)
    res = plan.plan_project(con, budget=args.budget,
                            target_width=None if args.target_width is None else args.target_width / 100.0,
                            sme_cost_per_label=args.sme_cost_per_label, batch=args.batch, judge_model=args.judge_model,
                            judges_file=args.config, judge_cost_per_call=args.judge_cost_per_call,
                            from_scratch=args.from_scratch)
    if args.json:
        _print_json(res)
        return 0
    one = safetext.one_line
    goal = (f"budget ${res['budget_usd']:,.2f} still to spend" if res["mode"] == "budget"
            else f"target width {100 * res['target_width']:g} pp on every Delta")
    print(f"plan for a {goal}; {res['population_items']:,} items, {res['judged_items_now']:,} judged"
          f"{' (a census)' if res['census'] else ''}" + ("; planned from scratch (nothing bought yet)"
                                                       if res["from_scratch"] else "; what is done is sunk"))
    c = res["costs"]
    print(f"  costs: a judged item ${c['judged_item_usd']:,.4f} ({c['calls_per_judged_item']} calls"
          f"{', batch price' if c['batch'] else ''}), an SME label ${c['label_usd']:,.2f}")
    for src in c["sources"]:
        print(f"    {one(src, 200)}")
    print(f"  from the latest {res['fit']['kind']} fit on {res['fit']['n_labels']:,} labelled items "
          f"({res['interval']:.0%} intervals):")
    for q in res["quantities"]:
        what = (f"win rate {q['mean'] + 0.5:.3f}" if q.get("estimand") == "win rate" else f"Delta {q['mean']:+.3f}")
        print(f"    {one(q['dimension'], 40)} ({one(q['candidate'], 40)}): {what}, width now "
              f"{100 * q['width_now']:.1f} pp on {q['n2_now']:,} items; S_d^2 {q['s2_d']:.4f}, S_e^2 {q['s2_e']:.4f} "
              f"(a label counts x{q['worth']:.2f})")
    if not res.get("reachable", True):
        print("  plan: " + "; ".join(res["notes"]))
        return 0
    for key, title in (("plan", "PLAN"), ("all_labels_no_judges", "all labels, no judges"),
                       ("judge_every_item", "judge every item")):
        lines = _fmt_design(res.get(key), c["label_usd"])
        print(f"  {title}: {lines[0]}")
        for line in lines[1:]:
            print(f"    {line}")
    cf = res.get("closed_form")
    if cf:
        print(f"  check: the classical double-sampling optimum n2/n1 = {cf['ratio']:.3f} (N large): judge "
              f"{cf['judged_items']:,.0f}, label {cf['labelled_items']:,.0f}")
    for n in res["notes"]:
        print(f"  note: {one(n, 300)}")
    return 0


def cmd_queue(args) -> int:
    import csv as _csv

    from calib.review import queue

    con = _open_db(args)
    if args.segment or args.topic or args.judge_fail:
        batch = queue.queue_filtered(con, n=args.n, segment=args.segment, topic=args.topic,
                                     judge_fail=args.judge_fail, seed=args.seed)
        print(f"queued {batch.selected} of {batch.eligible} matching unlabelled items (recorded as a lead filter)",
              file=sys.stderr)
    have = queue.servable(con, args.lease or "", limit=args.n)
    tries = 0
    while len(have) < args.n and tries < 20:
        batch = queue.refill(con, args.n - len(have), seed=args.seed + tries, random_share=args.random_share)
        tries += 1
        have = queue.servable(con, args.lease or "", limit=args.n)
        if batch.eligible == 0:
            break
    rows = have[: args.n]
    if args.lease:
        leased = []
        for _ in rows:
            lease = queue.next_item(con, args.lease, reuse_active=False)
            if lease is None:
                break
            leased.append((lease.item_id, lease.candidate))
        rows = [r for r in rows if (r["item_id"], r["candidate"]) in set(leased)]
    # several candidates: a unit of work is (item, candidate), so say which candidate
    cols = ["item_id", *(["candidate"] if len(queue.unit_candidates(con)) > 1 else []),
            "inclusion_prob", "reason", "priority", "overlap"]
    queued, leased_now = read_back(args, con, lambda c: c.execute(
        "SELECT (SELECT count(*) FROM queue), (SELECT count(*) FROM leases WHERE ended_at IS NULL AND annotator = ?)",
        [args.lease or ""]).fetchone())
    print(f"read back from {store.resolve_db(args.db)}: {queued} queued units"
          + (f", {leased_now} open leases for {safetext.one_line(args.lease)}" if args.lease else ""), file=sys.stderr)
    if args.format == "json":
        _print_json([{k: r[k] for k in cols} for r in rows])
    else:
        shown = {"inclusion_prob": lambda v: f"{v:.6g}", "priority": lambda v: f"{v:.6g}"}
        w = _csv.writer(sys.stdout)
        w.writerow(cols)
        for r in rows:  # item ids, candidates and reasons from the data: formula-like text quoted
            w.writerow([shown[c](r[c]) if c in shown else safetext.csv_cell(r[c]) for c in cols])
    return 0


def cmd_users_add(args) -> int:
    import getpass

    from calib.review import users

    password = args.password or os.environ.get("TIEBREAK_PASSWORD")
    if args.sso_only:
        if not args.email:
            raise TiebreakError("--sso-only needs --email (single sign-on matches users by e-mail)")
        password = None  # a random one nobody knows
    elif not password:
        if not sys.stdin.isatty():
            raise TiebreakError("no password: give --password, set TIEBREAK_PASSWORD, --sso-only, or run in a terminal")
        password = getpass.getpass(f"password for {args.name}: ")
    con = _open_db(args)
    if args.email:
        from calib.review import sso

        sso.add_user(con, args.name, args.role, password, args.email)
    else:
        users.add_user(con, args.name, args.role, password)
    row = read_back(args, con, lambda c: c.execute("SELECT role, active FROM users WHERE name = ?", [args.name]).fetchone())
    if row is None or row[0] != args.role:
        raise TiebreakError(f"user {args.name}: not found in {store.resolve_db(args.db)} after saving")
    print(f"user {safetext.one_line(args.name)} ({row[0]}) saved in {store.resolve_db(args.db)} (read back)"
          + (f", e-mail {args.email.strip().lower()}" if args.email else ""))
    return 0


def cmd_users_email(args) -> int:
    from calib.review import sso

    if bool(args.email) == bool(args.clear):
        raise TiebreakError("give the e-mail, or --clear to remove it")
    email = sso.set_email(_open_db(args), args.name, None if args.clear else args.email, actor="cli")
    print(f"user {args.name}: e-mail {email}" if email else f"user {args.name}: e-mail removed")
    return 0


def cmd_users_list(args) -> int:
    from calib.review import sso, users

    con = _open_db(args)
    mails = sso.emails(con)
    for u in users.list_users(con):
        state = "locked" if u["locked"] else ("active" if u["active"] else "deactivated")
        mail = f"  {mails[u['name']]}" if u["name"] in mails else ""
        print(f"{u['name']:<24} {u['role']:<6} {state:<11} {u['created_at']}{mail}")
    return 0


def cmd_users_unlock(args) -> int:
    """Clear a name's sign-in waits. While the app holds the database (DuckDB lets one process in),
    leave a break-glass request beside it instead (``calib.review.breakglass``): the app applies it
    at its next sign-in attempt, for any user, and logs it."""
    from calib.review import breakglass, users

    try:
        if store.resolve_db(args.db) == store.DEMO_DB:
            from calib.data import demo

            con = demo.open_db(args.db)
        else:
            con = store.connect(args.db, create=False)
    except store.DatabaseLocked as exc:
        req = breakglass.write_request(exc.path, args.name)
        print(f"user {safetext.one_line(args.name)}: the app holds the database, so an unlock request was left in "
              f"{req.parent}; the app applies it at its next sign-in attempt (any user's) and logs it on the Admin page")
        return 0
    users.unlock(con, args.name, actor="cli")
    left = read_back(args, con, lambda c: c.execute(
        "SELECT count(*) FROM sign_in_throttle WHERE scope = 'user' AND key = ? AND failures > 0",
        [args.name]).fetchone()[0])
    if left:
        raise TiebreakError(f"user {args.name}: sign-in waits still recorded in {store.resolve_db(args.db)} after unlocking")
    print(f"user {safetext.one_line(args.name)}: failed sign-ins cleared (read back from {store.resolve_db(args.db)})")
    return 0


def cmd_backup(args) -> int:
    """A consistent one-file copy of the database, also while the app holds it."""
    import shutil
    import tempfile
    from pathlib import Path

    src, out = store.check_db_path(args.db), Path(args.out)  # an existing DuckDB file, refused in one line if not
    if out.exists():
        raise TiebreakError(f"{out}: already exists; give a new file name")
    with tempfile.TemporaryDirectory(prefix="tiebreak-backup-", dir=out.parent if out.parent.exists() else None) as tmp:
        con, seconds = store.snapshot(src, tmp)
        con.execute("CHECKPOINT")  # fold the write-ahead log in: the backup is one file
        con.close()
        shutil.move(str(Path(tmp) / src.name), out)
    print(f"{out}: backup of {src} ({out.stat().st_size / 1e6:.1f} MB, copied in {seconds:.2f} s)")
    return 0


# --------------------------------------------------------------------------- parser


def _judged_sample(args, con) -> None:
    """``judge run``: draw or extend the judged sample when ``--sample``/``--fraction`` asks (recorded,
    in one transaction, before any call: a killed run resumes with the same sample), and say on one
    line which items the judges score. Without them, a project with a sample has its recorded sample
    judged (never every item: that would silently turn a sample into a partial census)."""
    from calib.data import phase1

    n, frac = getattr(args, "sample", None), getattr(args, "fraction", None)
    if n is None and frac is None:
        if args.strata is not None or args.allocation is not None or args.seed is not None:
            raise TiebreakError("--strata, --allocation and --seed go with --sample N or --fraction F")
        s = phase1.summary(con)
        if s is not None:
            print(phase1.summary_line(s) + "; judging the recorded sample only (extend it with --sample N)")
        return
    strata = args.strata if args.strata is not None else phase1.recorded_strata(con)
    rep = phase1.draw_sample(con, n=n, fraction=frac, strata=strata, allocation=args.allocation or "proportional",
                             seed=args.seed if args.seed is not None else 0)
    print(rep.line(), flush=True)


def _judge_run(args, generate: bool) -> int:
    from calib.judges import config as judge_config, run as judges

    cfg = judge_config.load_config(args.config)
    con = _open_db(args)
    if not generate:
        _judged_sample(args, con)
    last = [0.0]

    def show(p: judges.Progress) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0 or p.done == p.total:
            last[0] = now
            print(f"\r{p.done}/{p.total} calls, {p.ok} ok, {p.failed} failed, ${p.cost_usd:.4f}", end="",
                  file=sys.stderr, flush=True)

    stop = threading.Event()
    try:
        p = judges.run(con, cfg, limit=args.limit, generate=generate, concurrency=args.concurrency,
                       stop=stop, on_progress=show)
    except KeyboardInterrupt:
        stop.set()
        raise
    print(file=sys.stderr)
    what = "outputs generated" if generate else "judge calls"
    print(f"{what}: {p.ok} ok, {p.failed} failed, {p.skipped} already done (skipped); "
          f"cost ${p.cost_usd:.4f}; {p.finished - p.started:.1f} s")
    for f in p.last_failures:
        print(f"  failed: {f}")
    if p.error:
        print(f"  {p.error}")
    elif p.stopped:
        print("  stopped before the end: re-run to go on")
    if p.failed:
        print("  re-run the same command to retry the failed calls (done ones are skipped)")
    ok = read_back(args, con, lambda c: c.execute(
        "SELECT count(*) FROM judge_calls WHERE status = 'ok' AND task " + ("= 'generate'" if generate else "<> 'generate'")
    ).fetchone()[0])
    print(f"  read back from {store.resolve_db(args.db)}: {ok} successful {what} recorded in all")
    return 0


def cmd_judge_run(args) -> int:
    if getattr(args, "batch", False):
        return _judge_run_batch(args)
    return _judge_run(args, generate=False)


def _judge_run_batch(args) -> int:
    from calib.judges import batch, config as judge_config

    cfg = judge_config.load_config(args.config)
    if args.concurrency:  # for the calls that run online (offline judges, the online fallback)
        cfg.run.concurrency = int(args.concurrency)
    opts = batch.BatchOptions(fallback=args.batch_fallback)
    if args.poll_seconds is not None:
        opts.poll_seconds = args.poll_seconds
        opts.poll_max_seconds = max(args.poll_seconds, min(600.0, args.poll_seconds * 20))
    if args.max_batch_requests is not None:
        opts.max_requests = args.max_batch_requests
    if args.max_batch_bytes is not None:
        opts.max_bytes = args.max_batch_bytes
    con = _open_db(args)
    _judged_sample(args, con)
    last = [0.0]

    def show(p: batch.BatchProgress) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0:
            last[0] = now
            print(f"\r{p.done}/{p.total} calls, {p.ok} ok, {p.failed} failed, {p.batches} batches submitted, "
                  f"{p.in_flight} requests at the provider, ${p.cost_usd:.4f}", end="", file=sys.stderr, flush=True)

    p = batch.run_batch(con, cfg, limit=args.limit, options=opts, on_progress=show)
    print(file=sys.stderr)
    print(f"judge calls (batch): {p.ok} ok, {p.failed} failed, {p.skipped} already done (skipped); "
          f"{p.batches} batches submitted ({p.submitted} requests), {p.collected} collected, "
          f"{p.requeued} lines re-queued; cost ${p.cost_usd:.4f} at batch prices; {p.finished - p.started:.1f} s")
    if p.seconds:
        print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in p.seconds.items()))
    for n in p.notes:
        print(f"  {n}")
    for f in p.last_failures:
        print(f"  failed: {f}")
    if p.error:
        print(f"  {p.error}")
    elif p.in_flight:
        print(f"  {p.in_flight} requests still at the provider: re-run the same command to collect them "
              "(they are not submitted again)")
    if p.failed:
        print("  re-run the same command to retry the failed calls (done ones are skipped)")
    return 0


def cmd_judge_batches(args) -> int:
    from calib.judges import batch

    con = _open_db(args, read_only=args.read_only)
    rows = batch.list_batches(con)
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'batch':>6} {'judge':<20} {'state':<12} {'requests':>8} {'ok':>7} {'failed':>7} {'requeued':>8}  "
          f"{'provider id':<32} updated")
    for r in rows:
        n = lambda v: "-" if v is None else str(v)  # noqa: E731
        print(f"{r['batch_no']:>6} {safetext.one_line(r['judge'])[:20]:<20} {r['state']:<12} {r['requests']:>8} "
              f"{n(r['ok']):>7} {n(r['failed']):>7} {n(r['requeued']):>8}  "
              f"{safetext.one_line(r['provider_batch_id'] or '-')[:32]:<32} {r['updated_at']:%Y-%m-%d %H:%M:%S}")
        if r["error"]:
            print(f"{'':>8}{safetext.one_line(r['error'])[:200]}")
    if not rows:
        print("no batches (run `tiebreak judge run --batch`)")
    return 0


def cmd_judge_generate(args) -> int:
    return _judge_run(args, generate=True)


def cmd_judge_report(args) -> int:
    from calib.judges import run as judges

    con = _open_db(args, read_only=args.read_only)
    out = {"calls": judges.call_summary(con), "position_bias": judges.position_bias(con)}
    if args.json:
        _print_json(out)
        return 0
    print(f"{'judge':<20} {'task':<9} {'ok':>6} {'failed':>6} {'tokens in/out':>16} {'cost $':>9} {'p50 ms':>7} {'p95 ms':>7}")
    for r in out["calls"]:
        tok = f"{r['input_tokens'] or 0}/{r['output_tokens'] or 0}"
        cost = f"{r['cost_usd']:.4f}" if r["cost_usd"] is not None else "-"
        p50 = f"{r['latency_p50_ms']:.0f}" if r["latency_p50_ms"] is not None else "-"
        p95 = f"{r['latency_p95_ms']:.0f}" if r["latency_p95_ms"] is not None else "-"
        print(f"{r['judge']:<20} {r['task']:<9} {r['ok']:>6} {r['failed']:>6} {tok:>16} {cost:>9} {p50:>7} {p95:>7}")
    for r in out["position_bias"]:
        if r["first_position_rate"] is not None:
            print(f"position bias {r['judge']} / {r['dimension']}: picks the first answer in "
                  f"{r['first_position_rate']:.0%} [{r['lo']:.0%}, {r['hi']:.0%}] of decided calls; "
                  f"orders agree on {r['order_consistency'] or 0:.0%} of {r['pairs_both_orders']} pairs")
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from calib.stats import engine
    from calib.insight import report

    con = _open_db(args)
    fit = engine.fit_project(con, args.fit) if args.fit else None
    text = report.build_report(con, fit, db_label=str(store.resolve_db(args.db)))
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"{args.out}: sign-off report written ({len(text) / 1e6:.1f} MB, self-contained)")
    return 0


def cmd_simulate(args) -> int:
    from calib.stats import engine
    from calib.review import simulate

    con = _open_db(args)
    n = simulate.simulate_sme(con, args.items, annotator=args.annotator, seed=args.seed)
    print(f"{n} items labelled by the simulated SME {args.annotator!r}")
    if not args.fit:
        total = read_back(args, con, lambda c: c.execute(
            "SELECT count(DISTINCT item_id) FROM (SELECT item_id FROM labels WHERE annotator = ? UNION ALL "
            "SELECT item_id FROM pair_labels WHERE annotator = ?)", [args.annotator, args.annotator]).fetchone()[0])
        print(f"  read back from {store.resolve_db(args.db)}: {total} items labelled by {args.annotator!r} in all")
    if args.fit:
        fit = engine.fit_project(con, "fast")
        for d in fit["diffs"]:
            print(f"  {d['dimension']:<14} Delta {_fmt_ci(d)}  P(not worse) {d['p_noninferior']:.3f}  {d['decision']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tiebreak",
        description="Tiebreak: decide whether a candidate LLM can replace the production one, "
                    "from automated judges calibrated on SME labels.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("init", help="create a new, empty Tiebreak database (the other commands open existing ones only)")
    c.add_argument("path", help="the database file to create (must not exist), e.g. project.duckdb")
    c.set_defaults(func=cmd_init, db=None)

    c = sub.add_parser("import", help="import outputs with judge scores, or pairwise judge preferences (CSV, JSONL, "
                                      "Parquet), or promptfoo, Inspect AI or DeepEval result files")
    c.add_argument("file", help="one row per (item, model), or per (item, baseline, candidate) for pref: columns")
    c.add_argument("--baseline", help="the production model's name (default: kept, or the first model in the file)")
    c.add_argument("--add-model", action="append", nargs="?", const="*", metavar="NAME",
                   help="accept a model the project does not have yet; with a NAME (repeatable), accept that "
                        "model only, also when names of the file differ only in case, '-'/'_' or spaces")
    c.add_argument("--add-judge", action="store_true", help="accept a judge the project does not have yet")
    c.add_argument("--add-dimension", action="store_true", help="accept a dimension the project does not have yet")
    c.add_argument("--allow-new", action="store_true", help="accept new models, judges and dimensions")
    c.add_argument("--new", action="store_true", help="create the --db database (it must not exist) and import into it")
    c.add_argument("--judged-sample", choices=["uniform"],
                   help="only some items carry judge scores and they were drawn uniformly at random (pi1 = scored / "
                        "items of the file); else such a file needs an inclusion_prob column, or is refused")
    c.add_argument("--format", choices=["auto", "tiebreak", "promptfoo", "inspect", "deepeval"], default="auto",
                   help="the file's format (default: auto, told from its structure): Tiebreak's import format, "
                        "a promptfoo results file (JSON/JSONL), an Inspect AI log (.eval/.json), DeepEval results")
    c.add_argument("--dimension",
                   help="promptfoo/Inspect/DeepEval: the dimension for scores the tool does not name (default quality)")
    c.add_argument("--model", help="Inspect/DeepEval: the model's name (default: the log's model; DeepEval "
                                   "records none, so hyperparameters.model or the file name)")
    _db_arg(c)
    c.set_defaults(func=cmd_import)

    lab = sub.add_parser("labels", help="import or export SME labels")
    lsub = lab.add_subparsers(dest="labels_command", metavar="ACTION", required=True)
    li = lsub.add_parser("import", help="append labels from a file (pointwise and/or pairwise rows)")
    li.add_argument("file")
    li.add_argument("--source", default="import", help="recorded with each label (default: import)")
    _db_arg(li)
    li.set_defaults(func=cmd_labels_import)
    le = lsub.add_parser("export", help="write every label with its full history (.csv, .jsonl, .parquet)")
    le.add_argument("file")
    _db_arg(le)
    le.set_defaults(func=cmd_labels_export)

    c = sub.add_parser("status", help="print counts: items, outputs, judges, labels by dimension")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.add_argument("--read-only", action="store_true", help="open read-only (works beside other readers)")
    _db_arg(c)
    c.set_defaults(func=cmd_status)

    c = sub.add_parser("regressions", help="SME-confirmed regressions/improvements, likely regressions, queue them")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.add_argument("--dimension")
    c.add_argument("--candidate")
    c.add_argument("--top", type=int, help="entries in every list: segments, regressions, improvements, likely "
                                          "regressions, baseline preferences (default 3; with --json 20 likely "
                                          "regressions and every flip)")
    c.add_argument("--queue", type=int, default=0, metavar="K", help="queue about K likely regressions for SMEs")
    _db_arg(c)
    c.set_defaults(func=cmd_regressions)

    c = sub.add_parser("demo", help="generate a customer-support demo project of any size, with hidden truth")
    c.add_argument("--items", type=int, default=2000, help="number of items (default 2000)")
    c.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    c.add_argument("--candidates", type=int, default=1,
                   help="candidate models, 1-3 (default 1; 2 adds a cheaper one worse on refusal, 3 a better one)")
    _db_arg(c)
    c.set_defaults(func=cmd_demo)

    st = sub.add_parser("settings", help="show or change project settings (baseline, margin, ...)")
    ssub = st.add_subparsers(dest="settings_command", metavar="ACTION", required=True)
    ss = ssub.add_parser("show", help="print all settings as JSON")
    ss.add_argument("--read-only", action="store_true", help="open read-only")
    _db_arg(ss)
    ss.set_defaults(func=cmd_settings_show)
    ss = ssub.add_parser("set", help="set one setting, e.g. `settings set margin 0.03`")
    ss.add_argument("key", choices=list(store.DEFAULT_SETTINGS))
    ss.add_argument("value")
    _db_arg(ss)
    ss.set_defaults(func=cmd_settings_set)

    c = sub.add_parser("fit", help="fit the calibration model: pass rates, Delta, P(not worse), decision")
    c.add_argument("--json", action="store_true", help="print JSON (n_labels, interval, rates, diffs, preference, cross_checks)")
    c.add_argument("--margin", type=float, help="non-inferiority margin (default: the project setting, 0.02)")
    c.add_argument("--fast", action="store_true", help="fast fit (Laplace + importance sampling) instead of NUTS")
    c.add_argument("--draws", type=int, help="draws per chain (NUTS default 800; more when a fit warns of low ESS "
                                             "or R-hat) or from the fast fit (default 1000)")
    c.add_argument("--seed", type=int, default=0)
    _db_arg(c)
    c.set_defaults(func=cmd_fit)

    c = sub.add_parser("forecast", help="forecast the interval width of Delta and the chance of a decision after more labels")
    c.add_argument("--extra", default="50,100,200", help="extra labelled items, comma-separated (default 50,100,200)")
    c.add_argument("--target-width", type=float, help="interval width to reach (default: the project setting)")
    c.add_argument("--margin", type=float, help="non-inferiority margin (default: the project setting)")
    c.add_argument("--json", action="store_true", help="print JSON")
    _db_arg(c)
    c.set_defaults(func=cmd_forecast)

    c = sub.add_parser("plan", help="plan a budget: how many outputs to judge and items to label, the expected "
                                    "width and chance of a decision, against all labels and judging every item")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--budget", type=float, help="USD still to spend on judge calls and SME labels")
    g.add_argument("--target-width", type=float, help="interval width of every Delta to reach, in percentage points")
    c.add_argument("--sme-cost-per-label", type=float, help="USD per labelled item (default: the setting "
                   "sme_cost_per_label, else the median rating time x sme_hourly_usd)")
    c.add_argument("--batch", action="store_true", help="price judge calls at the provider batch price (half)")
    c.add_argument("--judge-model", help="litellm model name priced for judges with no measured calls, e.g. gpt-4o-mini")
    c.add_argument("--config", help="judges TOML file: each judge's model for the price map")
    c.add_argument("--judge-cost-per-call", type=float, help="USD per judge call (instead of measured or mapped prices)")
    c.add_argument("--from-scratch", action="store_true", help="plan a new project of this population (e.g. next "
                   "month's traffic) with nothing judged or labelled yet, from this project's variances")
    c.add_argument("--json", action="store_true", help="print JSON (plan, all_labels_no_judges, judge_every_item: "
                   "judged_items, judge_calls, labels, cost_usd, width)")
    _db_arg(c)
    c.set_defaults(func=cmd_plan)

    c = sub.add_parser("queue", help="choose and print the next items for SMEs (with inclusion probabilities)")
    c.add_argument("--n", type=int, default=10, help="how many items (default 10)")
    c.add_argument("--seed", type=int, default=0, help="random seed of the sampler (default 0)")
    c.add_argument("--random-share", type=float, help="share chosen uniformly at random (default: setting, 0.2)")
    c.add_argument("--format", choices=["csv", "json"], default="csv")
    c.add_argument("--lease", metavar="ANNOTATOR", help="lease the printed items to this annotator")
    c.add_argument("--segment", help="lead filter: queue N random unlabelled items of this segment")
    c.add_argument("--topic", help="lead filter: ... of this topic")
    c.add_argument("--judge-fail", metavar="JUDGE", help="lead filter: ... that this judge fails on some dimension")
    _db_arg(c)
    c.set_defaults(func=cmd_queue)

    jd = sub.add_parser("judge", help="run automated judges (litellm or offline) and generate candidate outputs")
    jsub = jd.add_subparsers(dest="judge_command", metavar="ACTION", required=True)
    for name, func, hlp in (
            ("run", cmd_judge_run, "score every output with the configured judges (resumable: done calls are skipped)"),
            ("generate", cmd_judge_generate, "generate the [generate] model's outputs for every item (streams; records latency, time to first token, tokens, cost)")):
        jr = jsub.add_parser(name, help=hlp)
        jr.add_argument("--config", required=True, help="judges TOML file (see data/judges.example.toml)")
        jr.add_argument("--limit", type=int, help="only the first N items (by id)")
        jr.add_argument("--concurrency", type=int, help="calls in flight (default: the file's [run] concurrency, 8)")
        if name == "run":
            jr.add_argument("--batch", action="store_true",
                            help="send the calls as provider batches (files + batches API, batch prices); resumable")
            jr.add_argument("--poll-seconds", type=float, help="with --batch: first wait between looks at open batches "
                            "(default 30; grows 1.5x while nothing changes, up to 10 minutes)")
            jr.add_argument("--max-batch-requests", type=int, help="with --batch: requests per batch file (default 50000)")
            jr.add_argument("--max-batch-bytes", type=int, help="with --batch: bytes per batch file (default 200 MB)")
            jr.add_argument("--batch-fallback", choices=["batch", "online"], default="batch",
                            help="with --batch: retry failed lines in a later batch (default) or online at once")
            sz = jr.add_mutually_exclusive_group()
            sz.add_argument("--sample", type=int, metavar="N",
                            help="judge a probability sample of N items (drawn and recorded first; a larger N later "
                                 "extends it as a new batch, the same N resumes); without it a project with a "
                                 "sample has its recorded sample judged")
            sz.add_argument("--fraction", type=float, metavar="F", help="judge a sample of this share of the items, in (0, 1]")
            jr.add_argument("--strata", choices=["segment"], help="with --sample/--fraction: draw per segment "
                            "(default: as the recorded sample, else not stratified)")
            jr.add_argument("--allocation", choices=["proportional", "neyman"],
                            help="with --strata: items per segment proportional to its size (default), or to its "
                                 "size x the sd of the judges' scores of the items judged so far (neyman)")
            jr.add_argument("--seed", type=int, help="with --sample/--fraction: the draw's seed (default 0)")
        _db_arg(jr)
        jr.set_defaults(func=func)
    jr = jsub.add_parser("batches", help="provider batches of `judge run --batch`: state, requests, ok, failed")
    jr.add_argument("--json", action="store_true", help="print JSON")
    jr.add_argument("--read-only", action="store_true", help="open read-only")
    _db_arg(jr)
    jr.set_defaults(func=cmd_judge_batches)
    jr = jsub.add_parser("report", help="calls, failures, tokens, cost and latency per judge; pairwise position bias")
    jr.add_argument("--json", action="store_true", help="print JSON")
    jr.add_argument("--read-only", action="store_true", help="open read-only")
    _db_arg(jr)
    jr.set_defaults(func=cmd_judge_report)

    c = sub.add_parser("report", help="write the self-contained HTML sign-off report (decisions, plots, settings, fingerprint)")
    c.add_argument("--out", required=True, help="the HTML file to write")
    c.add_argument("--fit", choices=["fast", "nuts"], help="fit anew first (default: the latest fit, refitted fast if labels arrived since)")
    _db_arg(c)
    c.set_defaults(func=cmd_report)

    c = sub.add_parser("simulate", help="demo: label N items as a simulated SME answering from the demo's hidden truth")
    c.add_argument("--items", type=int, default=20, help="items to label (default 20)")
    c.add_argument("--annotator", default="demo-sme", help="the simulated SME's name (default demo-sme)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--fit", action="store_true", help="refit (fast) afterwards and print the decisions")
    _db_arg(c)
    c.set_defaults(func=cmd_simulate)

    us = sub.add_parser("users", help="manage app users (sme, lead, admin)")
    usub = us.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    ua = usub.add_parser("add", help="add a user or change their role and password")
    ua.add_argument("name")
    ua.add_argument("--role", choices=["sme", "lead", "admin"], required=True)
    ua.add_argument("--password", help="the password (else $TIEBREAK_PASSWORD, else asked for)")
    ua.add_argument("--email", help="the e-mail single sign-on matches this user by")
    ua.add_argument("--sso-only", action="store_true",
                    help="no password (a random one nobody knows): the user signs in by single sign-on only")
    _db_arg(ua)
    ua.set_defaults(func=cmd_users_add)
    ue = usub.add_parser("email", help="set or remove the e-mail single sign-on matches a user by")
    ue.add_argument("name")
    ue.add_argument("email", nargs="?")
    ue.add_argument("--clear", action="store_true", help="remove the user's e-mail")
    _db_arg(ue)
    ue.set_defaults(func=cmd_users_email)
    ul = usub.add_parser("list", help="list users and roles")
    _db_arg(ul)
    ul.set_defaults(func=cmd_users_list)
    uu = usub.add_parser("unlock", help="clear a user's sign-in waits (works while the app runs)")
    uu.add_argument("name")
    _db_arg(uu)
    uu.set_defaults(func=cmd_users_unlock)

    c = sub.add_parser("backup", help="write a consistent one-file copy of the database (works while the app runs)")
    c.add_argument("out", help="the backup file to write (must not exist)")
    _db_arg(c)
    c.set_defaults(func=cmd_backup)

    return p


def command_names(parser: argparse.ArgumentParser | None = None) -> list[str]:
    """Every command path, e.g. ``import``, ``labels import`` (used by the README test)."""
    parser = parser or build_parser()
    out: list[str] = []

    def walk(p: argparse.ArgumentParser, prefix: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sp in action.choices.items():
                    path = f"{prefix} {name}".strip()
                    if not any(isinstance(a, argparse._SubParsersAction) for a in sp._actions):
                        out.append(path)
                    walk(sp, path)

    walk(parser, "")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TiebreakError as exc:
        print(f"tiebreak: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tiebreak: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tiebreak queue ... | head`: the reader left; what was written stays
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
