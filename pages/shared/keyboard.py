"""Keyboard shortcuts for the labelling page: the cheat sheet and a small script, both in one
``st.html(..., unsafe_allow_javascript=True)`` block (not iframed: the script runs in the app's
document; ``st.components.v1.html`` is deprecated and removed after 2026-06-01).

Digits 1-5 answer the first unanswered question of the rating form and move to the next one (the
cheat sheet names it, and the form outlines it); Ctrl+Enter submits; Alt+S skips, Alt+F flags,
Alt+U undoes the last rating, Alt+R shows or hides the reference. Typing in a text box is never
intercepted (except Ctrl+Enter). A moment after the last change to the form (and when the tab is
hidden: a reload, another tab) the script presses the form's "keep answers" button, which saves the
answers in progress as a draft: a form sends nothing to the server until one of its buttons is
pressed, and one rerun after a pause is kinder to quick raters than one rerun per click. The script does nothing once its cheat sheet has left the page
(another page of the app is shown), so shortcuts never click buttons elsewhere.

The only data in the block are the question names (dimension names, hostile like every name):
HTML-escaped in the markup, JSON with ``<``, ``>`` and ``&`` as ``\\u`` escapes in the script, and
set with ``textContent`` by the script.
"""

from __future__ import annotations

import json

import streamlit as st

from calib.safetext import clean, html as esc, one_line

SAVE_LABEL = "Keep answers for later"  # the rating form's second button (the script presses it)
SAVE_AFTER_MS = 800  # quiet time after the last change before the answers in progress are saved

CHEATSHEET = [
    ("1 / 2 / 3", "answer the next question (Pass / Fail; Appropriate / Over- / Under-refusal)"),
    ("1 ... 5", "overall preference, left much better ... right much better"),
    ("Ctrl+Enter", "submit"),
    ("Alt+S", "skip (with the reason chosen)"),
    ("Alt+F", "flag for a lead's review"),
    ("Alt+U", "undo: re-rate your previous item"),
    ("Alt+R", "show or hide the reference"),
]

_STYLE = """<style>
.tiebreak-keys table{border-collapse:collapse;font-size:.85rem;width:100%}
.tiebreak-keys td{border-top:1px solid rgba(49,51,63,.15);padding:3px 6px;vertical-align:top}
.tiebreak-keys td:first-child{white-space:nowrap;font-family:monospace}
.tiebreak-keys .next{margin:.4rem 0;padding:4px 8px;border-left:3px solid #ff4b4b;font-size:.9rem;
  overflow-wrap:anywhere;min-height:1.5em}
</style>"""

_SCRIPT = r"""
(function () {
  const doc = document;
  const QUESTIONS = __QUESTIONS__;
  const SAVE = __SAVE__;
  if (doc.__tiebreakHandler) doc.removeEventListener('keydown', doc.__tiebreakHandler, true);
  if (doc.__tiebreakChanged) {
    doc.removeEventListener('click', doc.__tiebreakChanged, true);
    doc.removeEventListener('input', doc.__tiebreakChanged, true);
    doc.removeEventListener('visibilitychange', doc.__tiebreakHidden, true);
  }
  if (doc.__tiebreakTimer) clearInterval(doc.__tiebreakTimer);
  const here = () => doc.getElementById('tiebreak-next');  // gone when another page is shown
  const click = (prefix) => {
    const b = [...doc.querySelectorAll('button')].find(x => !x.disabled && x.innerText.trim().startsWith(prefix));
    if (b) { b.click(); return true; } return false;
  };
  // answers in progress: saved (the form's SAVE button) once the rater pauses, or leaves the tab
  const stopSave = () => { clearTimeout(doc.__tiebreakSaveTimer); doc.__tiebreakSaveTimer = null; };
  const saveNow = () => { stopSave(); if (here()) click(SAVE); };
  // an answer clicked (mouse or digit: BaseWeb radios change on the label's click, with no change
  // event) or the note typed in the rating form; never a button (the save itself is a click)
  const changed = (e) => {
    const t = e.target;
    const form = t && t.closest && t.closest('[data-testid="stForm"]');
    if (!here() || !form || !form.querySelector('[role="radiogroup"]')) return;  // the rating form only
    if (e.type === 'click' && !t.closest('[role="radiogroup"]')) return;
    stopSave();
    doc.__tiebreakSaveTimer = setTimeout(saveNow, __SAVE_AFTER__);
  };
  const hidden = () => { if (doc.visibilityState === 'hidden' && doc.__tiebreakSaveTimer) saveNow(); };
  const groups = () => [...doc.querySelectorAll('[data-testid="stForm"] [role="radiogroup"]')];
  const answered = (g) => !!g.querySelector('input:checked');
  const show = () => {
    const el = here();
    if (!el) return;
    const gs = groups();
    const i = gs.findIndex(g => !answered(g));
    gs.forEach((g, k) => { g.style.outline = k === i ? '2px solid #ff4b4b' : ''; g.style.outlineOffset = '3px'; });
    let text = '';
    if (gs.length && i < 0) text = 'All answered: Ctrl+Enter submits.';
    else if (gs.length) {
      const n = gs[i].querySelectorAll('label').length;
      text = 'Next digit (1-' + n + ') answers: ' + (QUESTIONS[i] || ('question ' + (i + 1)));
    }
    if (el.textContent !== text) el.textContent = text;
  };
  const toggleReference = () => {
    const box = [...doc.querySelectorAll('[data-testid="stCheckbox"]')]
      .find(x => x.innerText.trim().startsWith('Show reference'));
    const input = box && box.querySelector('input');
    if (!input || input.disabled) return false;
    input.click();
    return true;
  };
  const handler = (e) => {
    if (!here()) return;
    const t = e.target;
    const typing = t && (t.tagName === 'TEXTAREA' || t.isContentEditable ||
                         (t.tagName === 'INPUT' && t.type !== 'radio' && t.type !== 'checkbox'));
    if (e.ctrlKey && e.key === 'Enter') { stopSave(); if (click('Submit')) e.preventDefault(); return; }
    if (typing) return;
    if (e.altKey && !e.ctrlKey && !e.metaKey) {
      const k = (e.code && e.code.startsWith('Key')) ? e.code.slice(3).toLowerCase() : e.key.toLowerCase();
      const map = {s: 'Skip', f: 'Flag', u: 'Undo'};
      if (k === 'r') { if (toggleReference()) e.preventDefault(); }
      else if (map[k]) { stopSave(); if (click(map[k])) e.preventDefault(); }
      return;
    }
    if (e.ctrlKey || e.metaKey) return;
    if (/^[1-9]$/.test(e.key)) {
      const g = groups().find(g => !answered(g));
      if (!g) return;
      const opts = g.querySelectorAll('label');
      const i = parseInt(e.key, 10) - 1;
      if (i < opts.length) { opts[i].click(); e.preventDefault(); setTimeout(show, 0); }
    }
  };
  doc.__tiebreakHandler = handler;
  doc.addEventListener('keydown', handler, true);
  doc.__tiebreakChanged = changed;
  doc.__tiebreakHidden = hidden;
  doc.addEventListener('click', changed, true);
  doc.addEventListener('input', changed, true);
  doc.addEventListener('visibilitychange', hidden, true);
  doc.__tiebreakTimer = setInterval(show, 250);  // the form is redrawn by reruns and clicks
  show();
  doc.__tiebreakKeys = true;
})();
"""


def questions(dimensions: list[str]) -> list[str]:
    """The rating form's questions in order (one per dimension and side, then the preference), as
    the cheat sheet names them: the digit keys answer them in this order."""
    out = [f"{one_line(d, 60)} · {side}" for d in dimensions for side in ("left", "right")]
    return out + ["overall preference"]


def _json_for_script(value) -> str:
    """JSON safe inside a <script>: no ``<``, ``>`` or ``&`` survives (no ``</script>`` from data)."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def block(dimensions: list[str]) -> str:
    """The cheat sheet's HTML with the listener script."""
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in CHEATSHEET)
    qs = [clean(q) for q in questions(dimensions)]
    script = (_SCRIPT.replace("__QUESTIONS__", _json_for_script(qs)).replace("__SAVE__", _json_for_script(SAVE_LABEL))
              .replace("__SAVE_AFTER__", str(SAVE_AFTER_MS)))
    return (f"{_STYLE}<div class='tiebreak-keys'><div id='tiebreak-next' class='next' aria-live='polite'></div>"
            f"<table>{rows}</table></div><script>{script}</script>")


def install(dimensions: list[str]) -> None:
    """Show the cheat sheet and add (or refresh) the shortcut listener on the page."""
    st.html(block(dimensions), unsafe_allow_javascript=True)
