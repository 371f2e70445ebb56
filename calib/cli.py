"""The ``tiebreak`` command line. Each command is a thin wrapper over a calib function.

The database comes from ``--db``, else ``$TIEBREAK_DB``, else the bundled demo database.
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

from calib.data import demo, store  # noqa: E402
from calib.errors import TiebreakError  # noqa: E402
from calib import safetext  # noqa: E402


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="DuckDB file (default: $TIEBREAK_DB, else the bundled demo database)")


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# While the app holds the database (DuckDB: one process per file), reads go to a snapshot and
# writes say which page does the same thing.
READS = {"status", "labels export", "fit", "forecast", "report", "settings show", "judge report", "users list",
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
    "users unlock": "unlock on the Admin page (Sign-in locks tab; leads can too)",
    "regressions queue": "queue likely regressions on the Regressions page (Queue these for SMEs)",
}
NOT_STORED = {"fit": " (the fit is not stored: the Decision page refits and stores while the app runs)"}


def command_path(args) -> str:
    """``labels import``, ``status`` ... from parsed arguments."""
    sub = getattr(args, f"{args.command}_command", None)
    return f"{args.command} {sub}" if sub else args.command


def _open_db(args, read_only: bool = False):
    """The project's database; when another process (the app) holds it, a read command works on a
    fresh snapshot (said on stderr) and a write command stops with a pointer to the page."""
    import atexit
    import shutil
    import tempfile

    try:
        return demo.open_db(args.db, read_only=read_only)
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


def cmd_import(args) -> int:
    from calib.data import evalformats, ingest

    allow = dict(add_model=args.add_model, add_judge=args.add_judge, add_dimension=args.add_dimension,
                 allow_new=args.allow_new)
    fmt = evalformats.detect(args.file) if args.format == "auto" else args.format
    if fmt in evalformats.FORMATS:  # another eval tool's file: reshaped, then the same importer
        conv = evalformats.convert(args.file, fmt, dimension=args.dimension or evalformats.DEFAULT_DIMENSION,
                                   model=args.model)
        report = evalformats.import_converted(_open_db(args), conv, baseline=args.baseline, **allow)
        print(conv.summary())  # what became what, printed once the import has landed
        print(report.summary())
        return 0
    if args.model or args.dimension:
        raise TiebreakError(f"{args.file}: --model and --dimension apply to promptfoo, Inspect AI and DeepEval "
                            "files; a Tiebreak file names its models and dimensions in its rows and columns")
    con = _open_db(args)
    print(ingest.import_file(con, args.file, baseline=args.baseline, **allow).summary())
    return 0


def cmd_labels_import(args) -> int:
    from calib.data import ingest

    con = _open_db(args)
    print(ingest.import_labels(con, args.file, source=args.source).summary())
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

    def one(cand: str) -> dict:
        entry = {"candidate": cand, "dimensions": {}}
        for d in dims:
            flips = rg.sme_flips(con, d, cand)
            lik = rg.likely_regressions(con, d, cand).head(args.top)
            e = {"flips": flips.to_dict("records"),
                 "by_segment": rg.flip_rates(con, d, "segment", cand).to_dict("records"),
                 "by_topic": rg.flip_rates(con, d, "topic", cand).to_dict("records"),
                 "likely_regressions": lik.to_dict("records")}
            if args.queue:
                b = rg.queue_likely_regressions(con, d, args.queue, cand)
                e["queued"] = {"batch_id": b.batch_id, "selected": b.selected, "expected": b.expected}
            entry["dimensions"][d] = e
        entry["pairwise_baseline_preferred"] = rg.pairwise_baseline_preferred(con, cand).to_dict("records")
        return entry

    # every candidate (or the one asked for); the first one's entries also at the top level, as before
    per = [one(c) for c in cands]
    out = {"baseline": s["baseline"], **per[0], "candidates": per}
    if args.json:
        _print_json(out)
        return 0
    for entry in per:
        if len(per) > 1:
            print(f"candidate {safetext.one_line(entry['candidate'])}:")
        _print_regressions(entry)
    return 0


def _print_regressions(entry: dict) -> None:
    for d, e in entry["dimensions"].items():
        reg = [f for f in e["flips"] if f["flip"] == "regression"]
        print(f"{d}: {len(reg)} SME-confirmed regressions, {len(e['flips']) - len(reg)} improvements")
        for f in reg:
            print(f"  {safetext.one_line(str(f['item_id']))}  {safetext.one_line(str(f['segment']))}  "
                  f"{safetext.one_line(str(f['topic']))}")
        print("  likely regressions (unlabelled): " + ", ".join(
            f"{safetext.one_line(str(x['item_id']))} {x['p_regression']:.2f}" for x in e["likely_regressions"]))
        if "queued" in e:
            print(f"  queued batch {e['queued']['batch_id']}: {e['queued']['selected']} items")


def cmd_demo(args) -> int:
    con = _open_db(args)
    have = con.execute("SELECT count(*) FROM items").fetchone()[0]
    if have:
        raise TiebreakError(f"{store.resolve_db(args.db)} already holds {have} items; give a new --db path for a demo")
    if not 1 <= args.candidates <= len(demo.ALL_CANDIDATES):
        raise TiebreakError(f"--candidates must be between 1 and {len(demo.ALL_CANDIDATES)} (got {args.candidates})")
    demo.load_demo(con, args.items, args.seed, candidates=args.candidates)
    print(f"{store.resolve_db(args.db)}: demo with {args.items} items and {args.candidates} candidate(s) "
          f"(seed {args.seed}) loaded; hidden truth stored for the simulated SME")
    return 0


def cmd_settings_show(args) -> int:
    con = _open_db(args, read_only=args.read_only)
    _print_json(store.get_settings(con))
    return 0


def cmd_settings_set(args) -> int:
    con = _open_db(args)
    with store.transaction(con):
        store.set_settings(con, **{args.key: store.parse_setting(args.key, args.value)})
    print(f"{args.key} = {json.dumps(store.get_settings(con)[args.key])}")
    return 0


def _fmt_ci(r: dict) -> str:
    return f"{r['mean']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]"


def cmd_fit(args) -> int:
    from calib.stats import engine

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
    for d in res["diffs"]:
        print(f"  {d['dimension']:<14} Delta {d['candidate']} - {d['baseline']}: {_fmt_ci(d)}  "
              f"P(not worse) = {d['p_noninferior']:.3f}  ->  {d['decision'].upper()}")
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
    if args.format == "json":
        _print_json([{k: r[k] for k in cols} for r in rows])
    else:
        shown = {"inclusion_prob": lambda v: f"{v:.6g}", "priority": lambda v: f"{v:.6g}"}
        w = _csv.writer(sys.stdout)
        w.writerow(cols)
        for r in rows:
            w.writerow([shown.get(c, lambda v: v)(r[c]) for c in cols])
    return 0


def cmd_users_add(args) -> int:
    import getpass

    from calib.review import users

    password = args.password or os.environ.get("TIEBREAK_PASSWORD")
    if not password:
        if not sys.stdin.isatty():
            raise TiebreakError("no password: give --password, set TIEBREAK_PASSWORD, or run in a terminal")
        password = getpass.getpass(f"password for {args.name}: ")
    con = _open_db(args)
    users.add_user(con, args.name, args.role, password)
    print(f"user {args.name} ({args.role}) saved")
    return 0


def cmd_users_list(args) -> int:
    from calib.review import users

    con = _open_db(args)
    for u in users.list_users(con):
        state = "locked" if u["locked"] else ("active" if u["active"] else "deactivated")
        print(f"{u['name']:<24} {u['role']:<6} {state:<11} {u['created_at']}")
    return 0


def cmd_users_unlock(args) -> int:
    from calib.review import users

    con = _open_db(args)
    users.unlock(con, args.name, actor="cli")
    print(f"user {args.name}: failed sign-ins cleared, lock lifted")
    return 0


def cmd_backup(args) -> int:
    """A consistent one-file copy of the database, also while the app holds it."""
    import shutil
    import tempfile
    from pathlib import Path

    src, out = store.resolve_db(args.db), Path(args.out)
    if not src.exists():
        raise TiebreakError(f"{src}: no such database")
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


def _judge_run(args, generate: bool) -> int:
    from calib.judges import config as judge_config, run as judges

    cfg = judge_config.load_config(args.config)
    con = _open_db(args)
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
    return 0


def cmd_judge_run(args) -> int:
    return _judge_run(args, generate=False)


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

    c = sub.add_parser("import", help="import outputs with judge scores, or pairwise judge preferences (CSV, JSONL, "
                                      "Parquet), or promptfoo, Inspect AI or DeepEval result files")
    c.add_argument("file", help="one row per (item, model), or per (item, baseline, candidate) for pref: columns")
    c.add_argument("--baseline", help="the production model's name (default: kept, or the first model in the file)")
    c.add_argument("--add-model", action="store_true", help="accept a model the project does not have yet")
    c.add_argument("--add-judge", action="store_true", help="accept a judge the project does not have yet")
    c.add_argument("--add-dimension", action="store_true", help="accept a dimension the project does not have yet")
    c.add_argument("--allow-new", action="store_true", help="accept new models, judges and dimensions")
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
    c.add_argument("--top", type=int, default=20, help="likely regressions to list")
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
        _db_arg(jr)
        jr.set_defaults(func=func)
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
    _db_arg(ua)
    ua.set_defaults(func=cmd_users_add)
    ul = usub.add_parser("list", help="list users and roles")
    _db_arg(ul)
    ul.set_defaults(func=cmd_users_list)
    uu = usub.add_parser("unlock", help="lift a sign-in lockout (after too many failed sign-ins)")
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
