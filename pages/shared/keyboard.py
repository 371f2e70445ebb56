"""Keyboard shortcuts for the labelling page: a small script in a zero-height component that
listens on the app's document (same origin) and clicks the matching radio option or button.

Digits 1-5 answer the first unanswered question of the rating form and move to the next one;
Ctrl+Enter submits; Alt+S skips, Alt+F flags, Alt+U undoes the last rating, Alt+R shows the
reference. Typing in a text box is never intercepted (except Ctrl+Enter).
"""

import streamlit.components.v1 as components

CHEATSHEET = [
    ("1 / 2 / 3", "answer the next question (Pass / Fail; Appropriate / Over- / Under-refusal)"),
    ("1 ... 5", "overall preference, left much better ... right much better"),
    ("Ctrl+Enter", "submit"),
    ("Alt+S", "skip (with the reason chosen)"),
    ("Alt+F", "flag for a lead's review"),
    ("Alt+U", "undo: re-rate your previous item"),
    ("Alt+R", "show or hide the reference"),
]

_SCRIPT = """
<script>
(function () {
  const doc = window.parent.document;
  // A rerun may re-create this frame, and a listener owned by a removed frame stops working:
  // every load replaces the previous handler.
  if (doc.__tiebreakHandler) doc.removeEventListener('keydown', doc.__tiebreakHandler, true);
  const click = (prefix) => {
    const b = [...doc.querySelectorAll('button')].find(x => x.innerText.trim().startsWith(prefix));
    if (b) { b.click(); return true; } return false;
  };
  const groups = () => [...doc.querySelectorAll('[data-testid="stForm"] [role="radiogroup"]')];
  const answered = (g) => !!g.querySelector('input:checked');
  const handler = (e) => {
    const t = e.target;
    const typing = t && (t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && t.type !== 'radio'));
    if (e.ctrlKey && e.key === 'Enter') { if (click('Submit')) e.preventDefault(); return; }
    if (typing) return;
    if (e.altKey) {
      const k = e.key.toLowerCase();
      const map = {s: 'Skip', f: 'Flag', u: 'Undo', r: 'Show reference'};
      if (map[k]) {
        if (k === 'r') {
          const lab = [...doc.querySelectorAll('label')].find(x => x.innerText.trim().startsWith('Show reference'));
          if (lab) { lab.click(); e.preventDefault(); }
        } else if (click(map[k])) { e.preventDefault(); }
      }
      return;
    }
    if (/^[1-5]$/.test(e.key)) {
      const g = groups().find(g => !answered(g));
      if (!g) return;
      const opts = g.querySelectorAll('label');
      const i = parseInt(e.key, 10) - 1;
      if (i < opts.length) { opts[i].click(); e.preventDefault(); }
    }
  };
  doc.__tiebreakHandler = handler;
  doc.addEventListener('keydown', handler, true);
  doc.__tiebreakKeys = true;
})();
</script>
"""


def install() -> None:
    """Add (or refresh) the shortcut listener on the page."""
    components.html(_SCRIPT, height=0)
