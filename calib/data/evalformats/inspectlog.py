"""Inspect AI eval logs, ``.json`` and ``.eval`` (a zip: ``header.json`` or ``_journal/start.json``
and ``samples/<id>_epoch_<n>.json``), as Tiebreak rows. The zip is read with caps on its member
count and on the bytes actually unpacked (a bomb's headers lie), never extracted to disk."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Iterator

from calib.data.evalformats.common import Converted, Row, as_number, as_text, dimension_name, read_json_document
from calib.errors import InputError

MAX_ZIP_MEMBERS = 200_000
MAX_ZIP_MEMBER_BYTES = 256 * 1024 * 1024
MAX_ZIP_TOTAL_BYTES = 4 * 1024 * 1024 * 1024

INSPECT_VALUES = {"C": 1.0, "P": 0.5, "I": 0.0, "N": 0.0}  # CORRECT, PARTIAL, INCORRECT, NOANSWER


def _inspect_value(v: Any) -> float | None:
    """Inspect's ``value_to_float``: C 1, P 0.5, I/N 0, yes/true 1, no/false 0, numbers as numbers."""
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        if v in INSPECT_VALUES:
            return INSPECT_VALUES[v]
        low = v.strip().lower()
        if low in ("yes", "true"):
            return 1.0
        if low in ("no", "false"):
            return 0.0
        try:
            return float(low)
        except ValueError:
            return None
    return None


def _resolve(text: Any, attachments: dict) -> Any:
    """Inspect condenses long content into ``attachment://<hash>`` references kept in the sample."""
    if isinstance(text, str) and text.startswith("attachment://"):
        return attachments.get(text[len("attachment://"):], text)
    return text


def _content_text(content: Any, attachments: dict) -> str:
    """A message's content (a string or a list of parts) as text; non-text parts as a marker."""
    content = _resolve(content, attachments)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict):
                if p.get("type") == "text":
                    parts.append(str(_resolve(p.get("text", ""), attachments)))
                elif p.get("type") == "reasoning":
                    continue  # the model's hidden reasoning is not its answer
                else:
                    parts.append(f"({p.get('type', 'content')})")
            elif isinstance(p, str):
                parts.append(p)
        return "\n".join(parts)
    return as_text(content) or ""


def _inspect_prompt(inp: Any, attachments: dict) -> str:
    inp = _resolve(inp, attachments)
    if isinstance(inp, str):
        return inp
    if isinstance(inp, list):
        msgs = [m for m in inp if isinstance(m, dict)]
        if len(msgs) == 1 and msgs[0].get("role") == "user":
            return _content_text(msgs[0].get("content"), attachments)
        return "\n\n".join(f"{m.get('role', '?')}: {_content_text(m.get('content'), attachments)}" for m in msgs)
    return as_text(inp) or ""


def _read_capped(z: zipfile.ZipFile, name: str, budget: list[int], path: Path) -> bytes:
    """A zip member's bytes, read with a cap (the header's sizes are not trusted: a bomb lies)."""
    try:
        with z.open(name) as fh:
            data = fh.read(MAX_ZIP_MEMBER_BYTES + 1)
    except NotImplementedError:
        raise InputError(str(path), None, None, f"member {name!r} uses a compression this Python cannot read "
                                                "(deflate64 from older Inspect, or zstd from INSPECT_USE_ZSTD); "
                                                "convert it with `inspect log convert --to json`") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(str(path), None, None, f"damaged zip member {name!r}: {exc}") from None
    if len(data) > MAX_ZIP_MEMBER_BYTES:
        raise InputError(str(path), None, None, f"member {name!r} unpacks to more than "
                                                f"{MAX_ZIP_MEMBER_BYTES // 2**20} MiB; refused")
    budget[0] -= len(data)
    if budget[0] < 0:
        raise InputError(str(path), None, None, f"the log unpacks to more than {MAX_ZIP_TOTAL_BYTES // 2**30} GiB; refused")
    return data


def _zip_json(z, name, budget, path) -> Any:
    data = _read_capped(z, name, budget, path)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputError(str(path), None, None, f"member {name!r} is not readable JSON: {exc}") from None


def _inspect_log(path: Path) -> tuple[dict, Iterator[tuple[str, Any]], str]:
    """(eval spec, (locator, sample) pairs, layout) from a ``.json`` or ``.eval`` log."""
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
    if not is_zip:
        doc = read_json_document(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("eval"), dict):
            raise InputError(str(path), None, "eval", "not an Inspect eval log (no 'eval' object)")
        samples = doc.get("samples")
        if not isinstance(samples, list):
            raise InputError(str(path), None, "samples", "the log has no samples (was it written with "
                                                         "--no-log-samples, or is it still running?)")
        return doc["eval"], ((f"samples[{i}]", s) for i, s in enumerate(samples)), ".json log"
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(str(path), None, None, f"not a readable .eval (zip) file: {exc}") from None
    infos = z.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        z.close()
        raise InputError(str(path), None, None, f"the zip has {len(infos)} members (limit {MAX_ZIP_MEMBERS}); refused")
    try:
        names = [i.filename for i in infos]
        budget = [MAX_ZIP_TOTAL_BYTES]
        header_name = next((n for n in ("header.json", "_journal/start.json", "start.json") if n in names), None)
        if header_name is None:
            raise InputError(str(path), None, None, "not an Inspect .eval log (no header.json or _journal/start.json)")
        header = _zip_json(z, header_name, budget, path)
        spec = header.get("eval") if isinstance(header, dict) else None
        if not isinstance(spec, dict):
            raise InputError(str(path), None, "eval", f"{header_name} has no 'eval' object")
        # samples/<id>_epoch_<n>.json (the experimental .eval2 keeps a sample's shell in .../sample.json)
        sample_names = [n for n in names if n.startswith("samples/") and n.endswith(".json")
                        and (n.count("/") == 1 or n.endswith("/sample.json"))]
        if not sample_names:
            raise InputError(str(path), None, "samples", "the log has no samples (was it written with "
                                                         "--no-log-samples, or is it still running?)")
    except BaseException:
        z.close()
        raise

    def gen():
        try:
            for n in sample_names:
                yield n, _zip_json(z, n, budget, path)
        finally:
            z.close()
    return spec, gen(), ".eval log (zip)"


def read(path: Path, dimension: str, model: str | None) -> Converted:
    spec, samples, layout = _inspect_log(path)
    task = as_text(spec.get("task")) or path.stem
    name = model or as_text(spec.get("model"))
    if not name:
        raise InputError(str(path), None, "eval.model", "the log names no model; import with --model NAME")
    conv = Converted("inspect", str(path), [])
    seen: dict[str, int] = {}  # item -> the epoch kept
    later_epochs = errored = list_scores = unreadable = 0
    scorers: set[str] = set()
    n = 0
    for rec, (where, s) in enumerate(samples, start=1):
        n += 1
        if not isinstance(s, dict):
            raise InputError(str(path), rec, None, f"{where} is not an object (an Inspect sample)")
        sid = s.get("id")
        if sid is None or isinstance(sid, (dict, list)):
            raise InputError(str(path), rec, "id", f"{where}: the sample has no id")
        epoch = s.get("epoch") if isinstance(s.get("epoch"), int) else 1
        if s.get("error"):
            errored += 1
            continue
        attachments = s.get("attachments") if isinstance(s.get("attachments"), dict) else {}
        item_id = f"{task}/{sid}"
        if item_id in seen:  # another epoch of a sample already read: keep the lowest epoch
            later_epochs += 1
            if epoch >= seen[item_id]:
                continue
            conv.rows = [r for r in conv.rows if r.values["item_id"] != item_id]
        output = s.get("output") if isinstance(s.get("output"), dict) else {}
        choices = output.get("choices") if isinstance(output.get("choices"), list) else []
        text = None
        if output.get("completion") is not None:
            text = as_text(_resolve(output.get("completion"), attachments))
        elif choices and isinstance(choices[0], dict) and isinstance(choices[0].get("message"), dict):
            text = _content_text(choices[0]["message"].get("content"), attachments)
        usage = output.get("usage") if isinstance(output.get("usage"), dict) else {}
        target = s.get("target")
        ref = "\n".join(str(t) for t in target) if isinstance(target, list) else as_text(target)
        latency = as_number(s.get("total_time")) if as_number(s.get("total_time")) is not None else as_number(output.get("time"))
        values: dict[str, Any] = {
            "item_id": item_id, "model": name, "prompt": _inspect_prompt(s.get("input"), attachments),
            "output": text or "", "reference": ref or None,
            "latency_ms": latency * 1000 if latency is not None else None,
            "input_tokens": as_number(usage.get("input_tokens")), "output_tokens": as_number(usage.get("output_tokens")),
        }
        fields = {"item_id": "id", "prompt": "input", "output": "output.choices[0].message.content",
                  "reference": "target", "latency_ms": "total_time", "model": "eval.model"}
        scores = s.get("scores") if isinstance(s.get("scores"), dict) else {}
        for scorer, sc in scores.items():
            if not isinstance(sc, dict):
                unreadable += 1
                continue
            judge = f"inspect-{scorer}"
            value = sc.get("value")
            parts = value.items() if isinstance(value, dict) else [(None, value)]
            for key, v in parts:
                if isinstance(v, (list, dict)):
                    list_scores += 1
                    continue
                dim = dimension_name(str(key)) if key is not None else dimension
                col = f"judge:{judge}:{dim}"
                score = _inspect_value(v)
                if score is None and v is not None:
                    unreadable += 1
                values[col] = score
                fields[col] = f"scores.{scorer}.value" + (f".{key}" if key is not None else "")
                if sc.get("explanation") is not None:
                    values[f"rationale:{judge}:{dim}"] = as_text(sc.get("explanation"))
                if (judge, dim) not in scorers:
                    scorers.add((judge, dim))
                    conv.mapping.append(f"scorer {scorer!r}{f' value {key!r}' if key is not None else ''} -> judge "
                                        f"{judge!r}, dimension {dim!r} (C 1, P 0.5, I/N 0, numbers as they are; "
                                        "explanation -> rationale)")
        seen[item_id] = epoch
        conv.rows.append(Row(values, rec, where, fields))
    conv.mapping.insert(0, f"{layout}: task {task!r}, model {name!r}"
                           f"{' (from --model)' if model else ' (eval.model)'}, {n} samples")
    conv.mapping.insert(1, "item_id = '<task>/<sample id>' (the same sample of the same task in another model's "
                           "log gets the same id); prompt = input; output = output.choices[0].message.content; "
                           "reference = target; latency_ms = total_time x 1000; tokens = output.usage")
    conv.skipped["later epochs (the first epoch of each sample is kept)"] = later_epochs
    conv.skipped["samples that ended in an error"] = errored
    conv.skipped["list-valued scores (not one number)"] = list_scores
    conv.skipped["score values not readable as numbers (left empty)"] = unreadable
    conv.column_fields = {"model": "eval.model", "prompt": "input", "output": "output"}
    return conv
