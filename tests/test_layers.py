"""The layering of ``calib/`` stays true: no module imports from a layer above its own.

Layers, lowest first: data (DuckDB, files), stats (model, fits), review (SME workflow), judges
(litellm), insight (what leads see); ``calib.errors`` and ``calib.safetext`` sit below them all and
``calib.cli`` above.
Streamlit is imported by no module of ``calib``; litellm only by ``calib.judges``.
"""

from __future__ import annotations

import ast
from pathlib import Path

CALIB = Path(__file__).resolve().parent.parent / "calib"
RANK = {"errors": -1, "safetext": -1, "data": 0, "stats": 1, "review": 2, "judges": 3, "insight": 4, "cli": 5}


def _layer(module: str) -> str:
    """'calib.stats.model' -> 'stats'; 'calib.cli' -> 'cli'."""
    return module.split(".")[1]


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every absolute module a file imports (function-level imports included), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            # `from calib import stats` names a layer too
            if node.module == "calib":
                found += [(f"calib.{a.name}", node.lineno) for a in node.names]
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for p in sorted(CALIB.rglob("*.py")):
        rel = p.relative_to(CALIB.parent).with_suffix("")
        out.append((".".join(rel.parts).removesuffix(".__init__"), p))
    return out


def test_every_module_sits_in_a_known_layer():
    for name, _ in _modules():
        assert name == "calib" or _layer(name) in RANK, f"{name} is in no layer: add it to one"


def test_no_module_imports_from_a_layer_above_its_own():
    bad = []
    for name, path in _modules():
        if name == "calib":
            continue
        own = RANK[_layer(name)]
        for mod, line in _imports(path):
            if mod.startswith("calib.") and RANK.get(_layer(mod), 99) > own:
                bad.append(f"{path.relative_to(CALIB.parent)}:{line} imports {mod}")
    assert not bad, "imports from a layer above:\n" + "\n".join(bad)


def test_streamlit_and_litellm_stay_where_they_belong():
    for name, path in _modules():
        for mod, line in _imports(path):
            top = mod.split(".")[0]
            assert top != "streamlit", f"{name}:{line} imports streamlit (calib has no UI code)"
            if top == "litellm":
                assert _layer(name) in ("judges", "cli"), f"{name}:{line} imports litellm"


def test_store_and_ingest_do_not_import_each_other_in_a_circle():
    store_imports = {m for m, _ in _imports(CALIB / "data" / "store.py")}
    assert "calib.data.ingest" not in store_imports and "calib.data.demo" not in store_imports
