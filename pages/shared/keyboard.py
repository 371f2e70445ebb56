"""Keyboard shortcuts for the labelling page: the cheat sheet and a small script, both in one
``st.html(..., unsafe_allow_javascript=True)`` block (not iframed: the script runs in the app's
document; ``st.components.v1.html`` is deprecated and removed after 2026-06-01).

Digits 1-5 answer the first unanswered question of the rating form and move to the next one (the
cheat sheet names it, and the form outlines it); Ctrl+Enter submits; Alt+S skips, Alt+F flags,
Alt+U undoes the last rating, Alt+R shows or hides the reference. Typing in a text box is never
intercepted (except Ctrl+Enter). The script does nothing once its cheat sheet has left the page
(another page of the app is shown), so shortcuts never click buttons elsewhere.

The only data in the block are the question names (dimension names, hostile like every name):
HTML-escaped in the markup, JSON with ``<``, ``>`` and ``&`` as ``\\u`` escapes in the script, and
set with ``textContent`` by the script.
"""

from __future__ import annotations

import json

import streamlit as st

from calib.safetext import clean, html as esc, one_line

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
  if (doc.__tiebreakHandler) doc.removeEventListener('keydown', doc.__tiebreakHandler, true);
  if (doc.__tiebreakTimer) clearInterval(doc.__tiebreakTimer);
  const here = () => doc.getElementById('tiebreak-next');  // gone when another page is shown
  const click = (prefix) => {
    const b = [...doc.querySelectorAll('button')].find(x => !x.disabled && x.innerText.trim().startsWith(prefix));
    if (b) { b.click(); return true; } return false;
  };
  const groups = () => [...doc.querySelectorAll('.st-key-label_rating [role="radiogroup"]')];
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
    if (e.ctrlKey && e.key === 'Enter') { if (click('Submit')) e.preventDefault(); return; }
    if (typing) return;
    if (e.altKey && !e.ctrlKey && !e.metaKey) {
      const k = (e.code && e.code.startsWith('Key')) ? e.code.slice(3).toLowerCase() : e.key.toLowerCase();
      const map = {s: 'Skip', f: 'Flag', u: 'Undo'};
      if (k === 'r') { if (toggleReference()) e.preventDefault(); }
      else if (map[k] && click(map[k])) e.preventDefault();
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
    script = _SCRIPT.replace("__QUESTIONS__", _json_for_script(qs))
    return (f"{_STYLE}<div class='tiebreak-keys'><div id='tiebreak-next' class='next' aria-live='polite'></div>"
            f"<table>{rows}</table></div><script>{script}</script>")


def install(dimensions: list[str]) -> None:
    """Show the cheat sheet and add (or refresh) the shortcut listener on the page."""
    st.html(block(dimensions), unsafe_allow_javascript=True)
