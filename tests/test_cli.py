"""The CLI: every command has help text and is documented; the README's test command is CI's."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

from calib import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_every_command_has_help_and_is_in_readme(capsys):
    readme = (ROOT / "README.md").read_text()
    names = cli.command_names()
    assert {"import", "labels import", "labels export", "status", "demo"} <= set(names)
    for name in names:
        try:
            cli.main([*name.split(), "--help"])
        except SystemExit as exc:
            assert exc.code == 0
        out = capsys.readouterr().out
        assert "usage: tiebreak " + name in out
        assert f"`tiebreak {name}" in readme, f"`tiebreak {name}` is not in README.md"
    parser = cli.build_parser()
    for action in parser._subparsers._group_actions[0]._choices_actions:
        assert action.help, f"{action.dest} has no help text"


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    assert len(blocks) >= 2
    ci = (ROOT / ".ci" / "run").read_text()
    assert blocks[1].strip() in ci


def test_status_on_demo(tmp_path):
    db = str(tmp_path / "d.duckdb")
    r = subprocess.run([sys.executable, "-m", "calib.cli", "demo", "--db", db, "--items", "50"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "calib.cli", "status", "--db", db], capture_output=True, text=True)
    assert r.returncode == 0
    assert re.search(r"items\s+50 in \d segments", r.stdout)
    assert "outputs    100" in r.stdout
