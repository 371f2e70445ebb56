"""How long `tiebreak import` takes on other eval tools' files: a promptfoo results.json and its
JSONL export (N tests x 2 providers, 2 assertions each) and an Inspect .eval log (N samples, 2
scorers), each converted and imported into a fresh database. Prints seconds and peak memory.

    python bench/evalformats_speed.py [N]      (default N = 10000)
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from calib.data import evalformats, store


def promptfoo_results(n: int) -> list[dict]:
    out = []
    for t in range(n):
        for p, prov in enumerate(({"id": "openai:gpt-4o-mini"}, {"id": "anthropic:claude", "label": "cand"})):
            q = f"Question number {t}: how do I do thing {t % 97}?"
            out.append({
                "promptIdx": 0, "testIdx": t, "provider": prov, "testCase": {"vars": {"q": q}},
                "prompt": {"raw": f"Answer: {q}", "label": "p"}, "vars": {"q": q},
                "response": {"output": f"answer {t} from {p} " + "words " * 40,
                             "tokenUsage": {"prompt": 30, "completion": 60}},
                "latencyMs": 500 + t % 300, "cost": 0.0002, "success": True, "score": 1, "failureReason": 0,
                "gradingResult": {"pass": True, "score": 1, "reason": "ok", "componentResults": [
                    {"pass": True, "score": (t * 7 + p) % 10 / 10, "reason": "rubric says so",
                     "assertion": {"type": "llm-rubric", "value": "good", "metric": "correctness"}},
                    {"pass": t % 3 > 0, "score": float(t % 3 > 0), "reason": "contains",
                     "assertion": {"type": "contains", "value": "answer"}}]},
            })
    return out


def inspect_eval(path: Path, n: int) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        spec = {"task": "bench", "model": "openai/gpt-4o-mini", "created": "2026-12-01", "dataset": {},
                "config": {}}
        z.writestr("header.json", json.dumps({"version": 2, "status": "success", "eval": spec, "plan": {}}))
        for i in range(n):
            s = {"id": i, "epoch": 1, "input": f"question {i}", "target": "x",
                 "output": {"choices": [{"message": {"role": "assistant", "content": "answer " * 40}}]},
                 "scores": {"match": {"value": "C" if i % 3 else "I"},
                            "model_graded_qa": {"value": "P", "explanation": "partly"}},
                 "messages": [], "events": [], "metadata": {}}
            z.writestr(f"samples/{i}_epoch_1.json", json.dumps(s))


def timed(label: str, path: Path, db: Path) -> dict:
    t0 = time.perf_counter()
    conv = evalformats.convert(path)
    t1 = time.perf_counter()
    con = store.connect(db)
    rep = evalformats.import_converted(con, conv)
    con.close()
    t2 = time.perf_counter()
    return {"file": label, "MiB": round(path.stat().st_size / 2**20, 1), "outputs": rep.added["outputs"],
            "judge_scores": rep.added["judge_scores"], "convert_s": round(t1 - t0, 2),
            "import_s": round(t2 - t1, 2)}


def run(n: int = 10_000) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = promptfoo_results(n)
        pj = tmp / "results.json"
        pj.write_text(json.dumps({"evalId": "bench", "results": {"version": 3, "results": results, "prompts": [],
                                                                  "stats": {}}, "config": {}}))
        pl = tmp / "results.jsonl"
        pl.write_text("\n".join(json.dumps(r) for r in results) + "\n")
        del results
        ev = tmp / "log.eval"
        inspect_eval(ev, n)
        for label, path in (("promptfoo results.json", pj), ("promptfoo results.jsonl", pl), ("inspect .eval", ev)):
            rows.append(timed(label, path, tmp / f"{path.suffix}.duckdb"))
    rows.append({"peak_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})
    return rows


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000):
        print(row)
