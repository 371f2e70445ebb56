"""calib.safetext: data-derived strings are shown as text, never interpreted."""

from calib import safetext


def test_clean_makes_bidi_and_control_characters_visible():
    assert safetext.clean("gnp\u202e.exe") == "gnp[U+202E].exe"
    assert safetext.clean("a\x00b\x1bc") == "a[U+0000]b[U+001B]c"
    assert safetext.clean("line\n\ttab") == "line\n\ttab"
    assert safetext.clean(None) == ""


def test_md_escapes_every_markdown_construct():
    for hostile in ["![x](http://127.0.0.1:9999/p.png)", "[link](http://x)", "<b>bold</b>", "**b**",
                    ":material/home:", ":red[alert]", "# heading", "`code`", "$x$"]:
        out = safetext.md(hostile)
        # every ASCII punctuation character is preceded by a backslash
        for i, ch in enumerate(out):
            if ch in "!()[]<>*:#`$/":
                assert out[i - 1] == "\\", (hostile, out)


def test_html_escapes_tags_and_quotes():
    assert safetext.html('<a href="x">l</a>') == "&lt;a href=&quot;x&quot;&gt;l&lt;/a&gt;"
    assert "\u202e" not in safetext.html("a\u202eb")


def test_one_line_cuts_long_names():
    assert safetext.one_line("a\nb") == "a b"
    assert len(safetext.one_line("x" * 500, 50)) == 50


def test_rows_cleans_every_string_value_and_column_name():
    import pandas as pd

    out = safetext.rows([{"seg\u202e": "a\u202eb", "n": 3, "x": None}])
    assert out == [{"seg[U+202E]": "a[U+202E]b", "n": 3, "x": None}]
    df = safetext.rows(pd.DataFrame({"m\u202e": ["x\u202e", "y"], "v": [1.0, 2.0]}))
    assert list(df.columns) == ["m[U+202E]", "v"] and df.iloc[0, 0] == "x[U+202E]" and df["v"].tolist() == [1.0, 2.0]


def test_guidelines_keep_markdown_but_no_link_image_html_or_math():
    g = safetext.guidelines("# Rubric\n**Pass** when [the spec](http://wiki/spec) holds ![x](http://127.0.0.1:9/p.png)"
                            " <img src=http://127.0.0.1:9/q.png> <script>alert(1)</script> $\\href{x}{y}$")
    assert g.startswith("# Rubric\n**Pass** when \\[the spec\\](http\u2060://wiki/spec)")  # markdown stays, links not
    assert "\\!\\[x\\]" in g and "\\<img" in g and "\\<script\\>" in g and "\\$" in g
    # an escape in the text cannot cancel ours: the backslash itself becomes literal
    assert safetext.guidelines("\\![x](u)") == "\\\\\\!\\[x\\](u)"
    assert safetext.guidelines("\u202e") == "\\[U+202E\\]"  # shown as [U+202E]


def test_guideline_links_of_every_kind_are_text():
    """Issue 25: an escaped image, a ``data:`` link, a reference link and bare URLs stay text: no
    bracket of link syntax survives unescaped, and no bare URL keeps its autolink shape."""
    import re

    for attack in ["\\![x](https://evil.example/p.png)", "[click](data:text/html;base64,PHNjcmlwdD4=)",
                   "[a][r]\n\n[r]: https://evil.example", "<https://evil.example>", "see https://evil.example/x",
                   "www.evil.example", "[x](javascript:alert(1))", "mail me@evil.example"]:
        g = safetext.guidelines(attack)
        assert not re.search(r"(?<!\\)(?:\\\\)*[\[\]<>]", g), (attack, g)  # every bracket escaped
        assert not re.search(r"https?://|www\.|\w@\w", g), (attack, g)



def test_md_stops_bare_urls_and_emails_from_becoming_links():
    out = safetext.md("see http://127.0.0.1:9/p.png, www.example.com or ana@example.com")
    for pattern in ("http\\:", "www\\.", "@example"):
        assert pattern not in out  # GFM autolinks these even when escaped
    assert out.replace("\u2060", "").replace("\\", "") == "see http://127.0.0.1:9/p.png, www.example.com or ana@example.com"


def test_excerpt_is_one_quoted_line_with_escapes_visible():
    from calib.safetext import excerpt

    got = excerpt('\x1b]0;title\x07\x1b[31mred\r\nnext "line"\x9b2J', 60)
    assert got.startswith('"') and got.endswith('"') and got.count('"') == 2
    assert not any(c in got for c in "\x1b\x07\r\n\x9b") and "[U+001B]" in got
    assert len(excerpt("x" * 500, 40)) == 42
