"""The SME labelling page through AppTest: blinded storage, order, skip/flag, refusal of half-filled forms, roles."""

from __future__ import annotations

import pathlib

import pytest
from streamlit.testing.v1 import AppTest

from calib.data import demo, store
from calib.review import labelling, users

ROOT = pathlib.Path(__file__).resolve().parent.parent
LABEL = str(ROOT / "pages" / "1_Label.py")


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "label.duckdb"
    con = store.connect(path)
    demo.load_demo(con, 120, seed=5)
    users.add_user(con, "ana", "sme", "password-ana")
    users.add_user(con, "lee", "lead", "password-lee")
    con.close()
    monkeypatch.setenv("TIEBREAK_DB", str(path))
    monkeypatch.chdir(ROOT)
    return path


def _app(role="sme", user="ana"):
    at = AppTest.from_file(LABEL, default_timeout=60)
    at.session_state["auth_user"] = user
    at.session_state["auth_role"] = role
    return at


def _con(db):
    from pages.shared import ui

    return ui._connection(str(db)).cursor()


def _fill(at, answers=None):
    """Answer every radio of the rating form (first option unless told)."""
    for r in at.radio:
        if r.key and r.key.startswith("label_") and r.value is None:
            r.set_value((answers or {}).get(r.key.split("_", 2)[2], r.options[0]))


def test_submit_stores_one_label_per_dimension_and_side_with_the_true_mapping(db):
    at = _app()
    at.run()
    assert not at.exception
    item = at.caption[0].value.split()[1]
    _fill(at, {"correctness_left": "Pass", "correctness_right": "Fail"})
    at.get("form_submit_button")[0].click().run()
    assert not at.exception
    con = _con(db)
    rows = con.execute("SELECT model, dimension, verdict, side, annotator FROM labels WHERE item_id = ?", [item]).fetchall()
    assert len(rows) == 6 and {(r[0], r[1]) for r in rows} == {(m, d) for m in demo.MODELS for d in demo.DIMENSIONS}
    left, right = labelling.blind_order(item, "ana", demo.MODELS)
    by = {(r[0], r[1]): r for r in rows}
    assert by[(left, "correctness")][2] is True and by[(left, "correctness")][3] == "left"
    assert by[(right, "correctness")][2] is False and by[(right, "correctness")][3] == "right"
    pref = con.execute("SELECT preference, strength, left_model FROM pair_labels WHERE item_id = ?", [item]).fetchone()
    assert pref[2] == left  # "Left much better" is the first option
    assert pref[0] == ("baseline" if left == demo.BASELINE else "candidate") and pref[1] == 2
    # the next item appears at once, and the day's count says one comparison done
    assert at.caption[0].value.split()[1] != item
    assert {m.label: m.value for m in at.metric}["Comparisons today"] == "1"


def test_half_filled_form_is_refused(db):
    at = _app()
    at.run()
    first = [r for r in at.radio if r.key and r.key.startswith("label_")][0]
    first.set_value(first.options[0])
    at.get("form_submit_button")[0].click().run()
    assert any("please answer" in e.value for e in at.error)
    assert _con(db).execute("SELECT count(*) FROM labels").fetchone()[0] == 0


def test_left_right_order_varies_across_items():
    lefts = {labelling.blind_order(f"q{i:07d}", "ana", demo.MODELS)[0] for i in range(40)}
    assert lefts == set(demo.MODELS)
    assert labelling.blind_order("q1", "ana", demo.MODELS) == labelling.blind_order("q1", "ana", demo.MODELS[::-1])


def test_skip_and_flag_are_recorded(db):
    at = _app()
    at.run()
    first = at.caption[0].value.split()[1]
    next(b for b in at.button if b.label.startswith("Skip")).click().run()
    second = at.caption[0].value.split()[1]
    assert second != first
    next(b for b in at.button if b.label.startswith("Flag")).click().run()
    con = _con(db)
    got = con.execute("SELECT item_id, outcome, reason FROM leases WHERE outcome IN ('skipped', 'flagged') ORDER BY lease_id").fetchall()
    assert got == [(first, "skipped", "Outside my expertise"), (second, "flagged", "Needs a lead's look")]


def test_model_names_and_judges_hidden_from_smes(db):
    at = _app()
    at.run()
    shown = " ".join(str(e.value) for e in [*at.markdown, *at.code, *at.caption])
    assert demo.BASELINE not in shown and demo.CANDIDATE not in shown
    assert not any("Judge scores" in e.label for e in at.expander)


def test_sme_cannot_open_lead_pages_and_anonymous_sees_sign_in(db):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state["auth_user"], at.session_state["auth_role"] = "ana", "sme"
    at.run()
    assert not at.metric or all(m.label != "Items" for m in at.metric)
    anon = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    anon.run()
    assert [t.label for t in anon.text_input][:2] == ["User name", "Password"]
    anon.text_input[0].set_value("ana")
    anon.text_input[1].set_value("password-ana")
    anon.get("form_submit_button")[0].click().run()
    assert anon.session_state["auth_role"] == "sme"


def test_undo_reopens_previous_item_and_appends(db):
    at = _app()
    at.run()
    item = at.caption[0].value.split()[1]
    _fill(at)
    at.get("form_submit_button")[0].click().run()
    next(b for b in at.button if b.label.startswith("Undo")).click().run()
    assert at.caption[0].value.split()[1] == item
    _fill(at, {f"{d}_{s}": labelling.options_for(d)[1] for d in demo.DIMENSIONS for s in ("left", "right")})
    at.get("form_submit_button")[0].click().run()
    n = _con(db).execute("SELECT count(*) FROM labels WHERE item_id = ?", [item]).fetchone()[0]
    assert n == 12  # the correction is appended; history kept


def test_left_right_order_varies_across_items_on_the_page(db):
    at = _app()
    at.run()
    for _ in range(8):
        _fill(at)
        at.get("form_submit_button")[0].click().run()
    sides = _con(db).execute(
        "SELECT DISTINCT side FROM labels WHERE model = ? AND dimension = 'correctness'", [demo.BASELINE]).fetchall()
    assert {s[0] for s in sides} == {"left", "right"}


def test_hostile_segment_and_dimension_names_are_shown_escaped(tmp_path, monkeypatch):
    """A segment or dimension named like a tracking pixel or a link reaches the page escaped: the
    caption, the form's headings and radio labels, the cheat sheet's script; bidi overrides visible."""
    import sys

    from calib import safetext

    sys.path.insert(0, str(ROOT / "tests"))
    import hostile

    path = tmp_path / "hostile.duckdb"
    names = hostile.build(path, port=9)
    monkeypatch.setenv("TIEBREAK_DB", str(path))
    monkeypatch.chdir(ROOT)
    at = _app(user=names["sme"])
    at.run()
    assert not at.exception
    assert hostile.audit(at) == []
    caption = at.caption[0].value
    assert any(safetext.md(safetext.one_line(s)) in caption for s in names["segments"])
    assert "\u202e" not in caption
    headings = [m.value for m in at.markdown]
    for d in names["dims"]:
        assert any(safetext.md(safetext.one_line(d[:1].upper() + d[1:], 60)) in h for h in headings)
    assert {r.label for r in at.radio if r.key and r.key.endswith("_left")} == {f"{safetext.md(d)} · left"
                                                                               for d in names["dims"]}
    assert all(safetext.md("[U+202E]") in r.label for r in at.radio if r.key and r.key.endswith("_left"))
    keys = next(h.value for h in at.html if "tiebreak-next" in h.value)
    assert "dimA" in keys and "<img" not in keys and "\\u003cimg" in keys


# --------------------------------------------------------------------------- answers in progress (issue 24)


def _keep(at):
    from pages.shared import keyboard

    next(b for b in at.get("form_submit_button") if b.label == keyboard.SAVE_LABEL).click().run()


def _answers(at) -> dict:
    return {r.key.split("_", 2)[2]: r.value for r in at.radio if r.key and r.key.startswith("label_")}


def test_answers_in_progress_survive_a_reload_and_submit_clears_them(db):
    """Three answered questions come back in a fresh session (a reload or a new tab) as the same SME;
    another SME does not see them; a submit stores labels and forgets the draft."""
    from calib.data import ingest

    at = _app()
    at.run()
    item = at.caption[0].value.split()[1]
    picks = {"correctness_left": "Pass", "correctness_right": "Fail"}
    for key, value in picks.items():
        at.radio(key=next(r.key for r in at.radio if r.key and r.key.endswith(key))).set_value(value)
    pref = next(r for r in at.radio if r.key and r.key.endswith("_preference"))
    pref.set_value(pref.options[3])
    _keep(at)  # what the keyboard script does a moment after the last change
    assert not at.exception
    # drafts are not labels: nothing counted, nothing exported
    con = _con(db)
    assert con.execute("SELECT count(*) FROM labels").fetchone()[0] == 0
    assert store.status(con)["labelled_items"] == 0
    assert ingest.export_labels(con, str(db.parent / "labels.csv")) == 0

    again = _app()
    again.run()
    assert again.caption[0].value.split()[1] == item
    got = _answers(again)
    assert {k: got[k] for k in picks} == picks and got["preference"] == pref.options[3]
    assert sum(v is not None for v in got.values()) == 3
    assert any("answers in progress" in c.value for c in again.caption)

    other = _app(user="lee", role="lead")  # another SME: their own unit, no one else's answers
    other.run()
    assert all(v is None for v in _answers(other).values())

    _fill(again)
    again.get("form_submit_button")[0].click().run()
    assert not again.exception
    assert con.execute("SELECT count(*) FROM labels WHERE item_id = ?", [item]).fetchone()[0] == 6
    assert con.execute("SELECT count(*) FROM drafts").fetchone()[0] == 0


def test_skip_clears_the_draft(db):
    at = _app()
    at.run()
    first = next(r for r in at.radio if r.key and r.key.startswith("label_"))
    first.set_value(first.options[0])
    _keep(at)
    assert _con(db).execute("SELECT count(*) FROM drafts").fetchone()[0] == 1
    next(b for b in at.button if b.label.startswith("Skip")).click().run()
    assert _con(db).execute("SELECT count(*) FROM drafts").fetchone()[0] == 0


def test_draft_storage_round_trip_and_hostile_values(tmp_path):
    from calib.review import drafts

    con = store.connect(tmp_path / "d.duckdb")
    assert drafts.load_draft(con, "ana", "q1", None) == {}
    drafts.save_draft(con, "ana", "q1", "cand", {"correctness:left": "Pass", "style:right": None,
                                                  "note": "<img src=x>\x1b[31m" + "n" * 9000, 3: "x"})
    got = drafts.load_draft(con, "ana", "q1", "cand")
    assert got["correctness:left"] == "Pass" and "style:right" not in got and len(got["note"]) == drafts.MAX_NOTE
    assert drafts.load_draft(con, "ana", "q1", "other") == {} and drafts.load_draft(con, "bo", "q1", "cand") == {}
    drafts.save_draft(con, "ana", "q1", "cand", {"correctness:left": "Fail"})  # replaced, not appended
    assert drafts.load_draft(con, "ana", "q1", "cand") == {"correctness:left": "Fail"}
    drafts.save_draft(con, "ana", "q1", "cand", {"correctness:left": None})  # nothing left: no draft
    assert con.execute("SELECT count(*) FROM drafts").fetchone()[0] == 0
    drafts.save_draft(con, "ana", "q2", None, {"preference": "Tie"})
    drafts.clear_draft(con, "ana", "q2", None)
    assert drafts.load_draft(con, "ana", "q2", None) == {}
    con.close()


@pytest.mark.parametrize("revoke", ["deactivate", "sign_out_everywhere", "password_reset"])
def test_a_revoked_page_writes_nothing_and_shows_the_sign_in_form(db, revoke):
    """Issue 25: the page was open (its token in session state, as after a real sign-in); the
    revocation happens elsewhere; the next submit, skip or flag from that page stores nothing and
    the page asks for a sign-in."""
    con = _con(db)
    at = _app()
    at.session_state["auth_token"] = users.issue_token(con, "ana")
    at.run()
    assert not at.exception
    before = con.execute("SELECT count(*) FROM labels").fetchone()[0]
    leases = con.execute("SELECT count(*) FROM leases").fetchone()[0]
    if revoke == "deactivate":
        users.set_active(con, "ana", False, actor="lee")
    elif revoke == "sign_out_everywhere":
        users.rotate_session_key(con, actor="lee")
    else:
        users.reset_password(con, "ana", "a-new-password", actor="lee")
    _fill(at)
    at.get("form_submit_button")[0].click().run()
    assert not at.exception
    assert con.execute("SELECT count(*) FROM labels").fetchone()[0] == before
    assert con.execute("SELECT count(*) FROM leases").fetchone()[0] == leases  # no new item leased either
    assert con.execute("SELECT count(*) FROM leases WHERE outcome IN ('skipped', 'flagged', 'labelled')"
                       ).fetchone()[0] == 0
    assert [t.label for t in at.text_input][:2] == ["User name", "Password"]
