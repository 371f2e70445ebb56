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
