"""Untrusted text made safe to show: every string that comes from data or users (prompts, outputs,
item ids, segments, topics, model, judge and dimension names, notes, reasons, user names,
rationales) goes through one of these before it reaches a page, a plot or the report.

- ``clean``: the text itself, with the characters that change how *other* text is displayed made
  visible: bidi controls (a right-to-left override turns ``gnp.exe`` into what looks like
  ``exe.png``) become ``[U+202E]``; other control characters (NUL, escape ...) become ``[U+0000]``.
  Tabs and newlines stay.
- ``md``: for a Streamlit markdown string (``st.markdown``, ``st.caption``, ``st.subheader``, widget
  labels, ``st.warning``...): ``clean`` plus a backslash before every ASCII punctuation character,
  so no link, image, emphasis, heading, HTML tag, ``:material/...:`` icon or ``:red[...]`` colour
  directive from the data is ever interpreted; an invisible word joiner stops bare URLs and e-mail
  addresses from becoming links.
- ``html``: for HTML (the report) and Plotly (titles, axes, legends, hover, annotations, which
  render ``<b>``, ``<a href>`` and ``<br>``): ``clean`` plus HTML escaping.
- ``rows``: ``clean`` on every string (values and column names) of a table for ``st.dataframe``
  (which shows text, but a bidi override would still reorder it).
- ``guidelines``: the lead-written rubric stays markdown, but images (a remote image is a request
  from every SME's browser), raw HTML and LaTeX are shown as text.
- ``csv_cell`` / ``csv_frame``: for a CSV file a lead may open in a spreadsheet: a text cell that
  starts with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a leading single quote, so the
  spreadsheet shows it as text instead of running it as a formula (OWASP, CSV injection). Numbers
  stay numbers: a numeric cell holds no formula (-0.5 is read as the number), and quoting it would
  turn a column of numbers into text in the spreadsheet.

No Streamlit here: this module sits below every layer (like ``calib.errors``) so plots, the report
and the pages use the same rules.
"""

from __future__ import annotations

import html as _html
import re
import string
import unicodedata

# Bidi embedding/override/isolate controls and marks, plus zero-width and line/paragraph separators
# that can hide or reorder text.
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_INVISIBLE = "\u200b\u200c\u200d\u2028\u2029\u2060\ufeff"
_SHOWN = re.compile(f"[{_BIDI}{_INVISIBLE}]")
_MD_SPECIAL = re.compile("([" + re.escape(string.punctuation) + "])")


def _visible(ch: str) -> str:
    return f"[U+{ord(ch):04X}]"


def clean(value: object) -> str:
    """``str(value)`` with bidi controls, invisible formatting characters and control characters
    (except tab and newline) shown as ``[U+XXXX]``; None is the empty string."""
    if value is None:
        return ""
    text = str(value)
    text = _SHOWN.sub(lambda m: _visible(m.group(0)), text)
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in text):
        text = "".join(_visible(c) if unicodedata.category(c) == "Cc" and c not in "\n\t" else c for c in text)
    return text


# GitHub-flavoured markdown turns ``http://...``, ``www.x.y`` and ``a@b.c`` in plain text into links
# after escapes are resolved (so a backslash does not stop it): an invisible word joiner after
# ``http``/``https``/``www`` and after ``@`` breaks the pattern and leaves the text as it looks.
_AUTOLINK = re.compile(r"(?i)(\bhttps?(?=:)|\bwww(?=\.)|@)")
_JOINER = "\u2060"


def md(value: object) -> str:
    """Text for a Streamlit markdown context: nothing in it is interpreted (see module doc), and no
    URL or e-mail address in it becomes a link."""
    return _MD_SPECIAL.sub(r"\\\1", _AUTOLINK.sub(lambda m: m.group(1) + _JOINER, clean(value)))


def html(value: object) -> str:
    """Text for HTML or a Plotly label: escaped, so no tag or entity from the data is interpreted."""
    return _html.escape(clean(value), quote=True)


def one_line(value: object, limit: int = 120) -> str:
    """``clean`` on one line (newlines as spaces), cut to ``limit`` characters with an ellipsis:
    for names and ids in headings and table cells."""
    text = " ".join(clean(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def rows(data):
    """A table (list of dicts, or a pandas DataFrame) with ``clean`` applied to every string value
    and column name; other values unchanged. Returns a new object of the same kind."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        out = data.rename(columns=lambda c: clean(c) if isinstance(c, str) else c)
        for c in out.columns:
            if pd.api.types.is_object_dtype(out[c]) or pd.api.types.is_string_dtype(out[c]):
                out[c] = out[c].map(lambda v: clean(v) if isinstance(v, str) else v)
        return out
    return [{(clean(k) if isinstance(k, str) else k): (clean(v) if isinstance(v, str) else v) for k, v in r.items()}
            for r in data]


# ``![alt](url)`` and ``![alt][ref]`` (escaping the ``!`` leaves a link), raw HTML tags, autolinks and
# LaTeX; backslashes just before are doubled so an escape in the text cannot cancel ours.
_UNSAFE_MD = re.compile(r"(\\*)(!(?=\[)|[<>$])")


def guidelines(value: object) -> str:
    """Lead-written markdown with no image, raw HTML or math: ``clean``, then a backslash before
    the ``!`` of image syntax and before every ``<``, ``>`` and ``$`` (inside code spans too, where
    the backslash shows); headings, lists, emphasis, links and tables still render."""
    return _UNSAFE_MD.sub(lambda m: m.group(1) * 2 + "\\" + m.group(2), clean(value))


# OWASP "CSV Injection": the characters with which a spreadsheet starts a formula (or, tab and CR,
# which some strip before looking at the next one).
CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A value for a CSV cell: text that a spreadsheet would run as a formula is prefixed with a
    single quote (shown as text); every other value (numbers, None, ordinary text) unchanged."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START):
        return "'" + value
    return value


def csv_frame(frame):
    """A pandas DataFrame for ``to_csv``: ``csv_cell`` on every text value and column name; numeric
    columns untouched (see the module docstring). Returns a new frame."""
    import pandas as pd

    out = frame.rename(columns=lambda c: csv_cell(c) if isinstance(c, str) else c)
    for c in out.columns:
        if pd.api.types.is_object_dtype(out[c]) or pd.api.types.is_string_dtype(out[c]):
            out[c] = out[c].map(csv_cell)
    return out
