"""Issue 25, sign-in and sessions (problems 2, 3 and 10): each attack of the issue, replayed, and
the figure it gets now. Loopback only; about 2-3 minutes on 2 cores.

- 2, revocation: an SME's open Label page after an admin deactivated her; a lead's open Decision
  page after a demotion plus "Sign everyone out", while another SME keeps labelling (so refits are
  due). Real app (``streamlit run`` on 127.0.0.1, port from $TIEBREAK_BENCH_PORTS, default
  8620-8629), Debian's chromium through playwright; counts read from the database afterwards.
- 3, lockout: 10 wrong passwords for every lead and admin from many addresses at once (the issue's
  attack), then a day of sustained attack from 50 addresses, on ``calib.review.users.sign_in``
  with a simulated clock (bcrypt at its lowest cost for the day-long run only); the break-glass
  unlock while another process holds the database; 24 colleagues signing in at once from one
  address (the "Another sign-in ... is being checked" message).
- 10, low items: the labels export's media URL fetched without a cookie; the session cookie's
  HttpOnly flag; a user named "local"; guideline links to outside hosts and ``data:``.

    .venv/bin/python bench/abuse_auth.py
"""

from __future__ import annotations

import heapq
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

# bench/coverage.py would shadow the `coverage` package numba imports: bench/ goes last on the path
# (as bench/abuse.py does, which imports this module among the other areas)
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(HERE))
from calib.data import demo, store  # noqa: E402
from calib.errors import TiebreakError  # noqa: E402
from calib.review import throttle, users  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
GUIDELINE_ATTACKS = ("Rubric. \\![x](http://evil.example/p.png) [click](data:text/html;base64,PHNjcmlwdD4=) "
                     "[docs](https://evil.example/) <https://evil.example/a> https://evil.example/bare "
                     "[r][ref]\n\n[ref]: https://evil.example/ref\n")


# --------------------------------------------------------------------------- problem 3: lockout


def _db(folder: str, name: str, extra_users: int = 0):
    con = store.connect(Path(folder) / name)
    for n, role in (("lea", "lead"), ("lou", "lead"), ("lin", "lead"), ("ada", "admin"), ("abe", "admin")):
        users.add_user(con, n, role, f"{n}-password")
    for i in range(extra_users):
        users.add_user(con, f"sme{i}", "sme", f"sme{i}-password")
    return con


def _issue_attack(folder: str) -> dict:
    """The issue's attack: 10 wrong passwords per lead and admin, from 10 addresses, all at once."""
    con = _db(folder, "lock.duckdb")
    names = ["lea", "lou", "lin", "ada", "abe"]
    t0 = time.time()
    threads = [threading.Thread(target=users.sign_in, args=(con.cursor(), n, f"guess-{k}", f"203.0.113.{k}", t0))
               for n in names for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dirty = [users.sign_in(con, n, f"{n}-password", "203.0.113.3", now=t0 + 1) for n in names]
    clean = [users.sign_in(con, n, f"{n}-password", "198.51.100.7", now=t0 + 1) for n in names]
    later = [users.sign_in(con, n, f"{n}-password", "203.0.113.4", now=t0 + 1 + throttle.DEFAULT_POLICY.name_max_seconds)
             for n in names]
    days = [users.sign_in(con, n, f"{n}-password", "203.0.113.5", now=t0 + 10 * 86400) for n in names]
    con.close()
    ok = lambda rs: sum(r.role is not None for r in rs)  # noqa: E731
    return {"clean": ok(clean), "dirty": ok(dirty), "dirty_wait": max(r.wait_seconds for r in dirty),
            "later": ok(later), "days": ok(days), "n": len(names)}


def _sustained_attack(folder: str, addresses: int = 20, hours: float = 6.0, office: bool = True) -> dict:
    """20 addresses fail for "ada" whenever their wait has run out, for 6 simulated hours; every 10
    minutes the real admin signs in from a clean address (her home), and from one of the attacking
    addresses (a shared office address) retrying when told."""
    rounds = users.ROUNDS
    users.ROUNDS, users._DUMMY[:] = 4, []  # the cost of a check does not change who is let in
    try:
        return _sustained(folder, addresses, hours, office)
    finally:
        users.ROUNDS, users._DUMMY[:] = rounds, []


def _sustained(folder: str, addresses: int, hours: float, office: bool) -> dict:
    con = _db(folder, f"sustained{int(office)}.duckdb")
    t0, end = 1_000_000.0, 1_000_000.0 + hours * 3600
    events = [(t0 + 0.01 * k, "attack", k) for k in range(addresses)]
    events += [(t0 + 600.0 * (j + 1), "probe", j) for j in range(int(hours * 6) - 1)]
    heapq.heapify(events)
    checked = clean_ok = clean_n = 0
    office_waits: list[float] = []
    while events:
        t, kind, k = heapq.heappop(events)
        if t > end:
            break
        if kind == "attack":
            r = users.sign_in(con, "ada", f"guess-{k}-{t}", f"203.0.113.{k}", now=t)
            checked += r.message.startswith(users.REFUSED)
            heapq.heappush(events, (t + max(r.wait_seconds, 1.0), "attack", k))
        else:
            clean_n += 1
            clean_ok += users.sign_in(con, "ada", "ada-password", f"198.51.{k % 250}.1", now=t).role == "admin"
            start, now = t, t
            for _ in range(50 if office else 0):  # the office address, retrying when told
                r = users.sign_in(con, "ada", "ada-password", "203.0.113.0", now=now)
                if r.role:
                    break
                now += max(r.wait_seconds, 1.0)
            if office:
                office_waits.append(now - start if r.role else float("inf"))
    con.close()
    # the first hours' share scaled up to a day: an upper figure (each address's one clean try a day falls in them)
    return {"checked_per_day": checked * 24.0 / hours, "clean_ok": clean_ok, "clean_n": clean_n,
            "office_max_wait": max(office_waits, default=0.0), "addresses": addresses}


def _parallel_colleagues(folder: str, n: int = 24) -> dict:
    """24 SMEs behind one office address press Sign in at the same moment (real bcrypt cost)."""
    con = _db(folder, "busy.duckdb", extra_users=n)
    results, times = [], []

    def go(i):
        t = time.perf_counter()
        results.append(users.sign_in(con.cursor(), f"sme{i}", f"sme{i}-password", "192.0.2.10"))
        times.append(time.perf_counter() - t)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    con.close()
    return {"n": n, "ok": sum(r.role == "sme" for r in results), "busy": sum(r.message == users.BUSY for r in results),
            "slowest": max(times)}


def _break_glass(folder: str) -> dict:
    """The app (here: this process) holds the database; the CLI unlocks from another process."""
    con = _db(folder, "glass.duckdb")
    path = Path(folder) / "glass.duckdb"
    now = time.time() - 3 * 3600
    for i in range(14):  # each guess as soon as allowed, until the wait is at its 15-minute cap
        wait = users.sign_in(con, "ada", f"guess-{i}", "local", now=now).wait_seconds
        now += wait if i < 13 else 1.0
    before = users.sign_in(con, "ada", "ada-password", "local", now=now)
    cli = subprocess.run([sys.executable, "-m", "calib.cli", "users", "unlock", "ada", "--db", str(path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    after = users.sign_in(con, "ada", "ada-password", "local", now=now + 1)
    con.close()
    return {"before_wait": before.wait_seconds, "before_ok": before.role is not None, "exit": cli.returncode,
            "after_ok": after.role == "admin"}


def _reserved(folder: str) -> str:
    con = _db(folder, "reserved.duckdb")
    try:
        users.add_user(con, "local", "admin", "local-password")
        return "created"
    except TiebreakError as exc:
        return f"refused ({exc})"
    finally:
        con.close()


# --------------------------------------------------------------------------- problems 2 and 10: the app


def _port() -> int:
    lo, hi = (int(x) for x in os.environ.get("TIEBREAK_BENCH_PORTS", "8620-8629").split("-"))
    for port in range(lo, hi + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port in $TIEBREAK_BENCH_PORTS")


def _start(db: Path):
    port = _port()
    env = {**os.environ, "TIEBREAK_DB": str(db), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true", "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                return url, proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the app did not start")


def _count(db: Path, sql: str, folder: str) -> int:
    """A count on a snapshot of the database the app holds."""
    con, _ = store.snapshot(db, tempfile.mkdtemp(dir=folder))
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def _sign_in(page, url, name, password, path=""):
    page.goto(url + path)
    page.get_by_role("textbox", name="User name").wait_for(timeout=90_000)
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"Signed in as {name}").first.wait_for(timeout=90_000)


def _admin(browser, url, who=None, button=None, role=None, rotate=False):
    page = browser.new_context(viewport={"width": 1500, "height": 1100}).new_page()
    _sign_in(page, url, "ada", "ada-password", "/Admin")
    page.get_by_text("Change a user").first.wait_for(timeout=60_000)
    if who:
        page.locator('[data-testid="stSelectbox"]', has_text="User").last.click()
        page.get_by_role("option", name=who, exact=True).click()
        page.wait_for_timeout(1500)
        if role:
            page.locator('[data-testid="stSelectbox"]', has_text="Role").last.click()
            page.get_by_role("option", name=role, exact=True).click()
            page.wait_for_timeout(1500)
        page.get_by_role("button", name=button).click()
        page.wait_for_timeout(2000)
    if rotate:
        page.get_by_role("tab", name="🔒 Sign-in waits").click()
        page.get_by_role("button", name="Sign everyone out").click()
        page.wait_for_timeout(2000)
    page.context.close()


FORM_READY_JS = r"""n => {
    const groups = document.querySelectorAll('[data-testid="stForm"] [role="radiogroup"]');
    return groups.length === n && !document.querySelector('[data-testid="stForm"] input:checked')
        && document.__tiebreakKeys === true;
}"""
NEXT_ITEM_JS = r"""old => {
    const e = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
        .find(x => /^Item q\d+/.test(x.innerText));
    return e && !e.innerText.startsWith('Item ' + old + ' ');
}"""
OUTSIDE_LINKS_JS = r"""() => [...document.querySelectorAll('[data-testid="stMain"] a[href], [data-testid="stMain"] img[src]')]
    .map(e => e.getAttribute('href') || e.getAttribute('src'))
    .filter(h => /^(data:|javascript:)/i.test(h) || (/^[a-z]+:/i.test(h) && !h.startsWith(location.origin)))"""


def _rate(page, dims: int, wait_next: bool = True) -> bool:
    """Rate the item on screen with the keyboard; True when the page took the form."""
    try:
        page.wait_for_function(FORM_READY_JS, arg=2 * dims + 1, timeout=15_000)
    except Exception:  # noqa: BLE001 - no form any more (signed out)
        return False
    item = page.locator("text=/^Item q\\d+/").first.inner_text().split()[1]
    page.evaluate("document.activeElement && document.activeElement.blur()")
    for _ in range(2 * dims):
        page.keyboard.press("1")
    page.keyboard.press("3")
    page.keyboard.press("Control+Enter")
    if wait_next:
        page.wait_for_function(NEXT_ITEM_JS, arg=item, timeout=30_000)
    else:
        page.wait_for_timeout(2500)
    return True


def _app_rows(folder: str) -> list[dict]:
    from playwright.sync_api import sync_playwright

    db = Path(folder) / "app.duckdb"
    con = store.connect(db)
    demo.load_demo(con, 80, seed=4)
    for n, role in (("sue", "sme"), ("sam", "sme"), ("lea", "lead"), ("ada", "admin")):
        users.add_user(con, n, role, f"{n}-password")
    users.save_guidelines(con, GUIDELINE_ATTACKS, "lea")
    con.close()
    dims = len(demo.DIMENSIONS)
    url, proc = _start(db)
    out: dict = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            sue = browser.new_context(viewport={"width": 1500, "height": 1100}).new_page()
            _sign_in(sue, url, "sue", "sue-password")
            _rate(sue, dims)
            out["outside_links"] = sue.evaluate(OUTSIDE_LINKS_JS)
            out["httponly"] = next(c for c in sue.context.cookies() if c["name"] == "tiebreak_session")["httpOnly"]

            lead_ctx = browser.new_context(viewport={"width": 1500, "height": 1100}, accept_downloads=True)
            lea = lead_ctx.new_page()
            _sign_in(lea, url, "lea", "lea-password", "/Decision")
            lea.get_by_text("Recommendation").first.wait_for(timeout=180_000)
            lea.get_by_text("Exports").click()
            lea.wait_for_timeout(1000)
            out["media_before_click"] = lea.evaluate("() => document.body.innerHTML.split('/media/').length - 1")
            with lea.expect_download(timeout=60_000) as dl:
                lea.get_by_role("button", name="Labels (csv)").click()
            media = dl.value.url
            t_click = time.time()
            answered = []
            while time.time() - t_click < 20:
                try:
                    urllib.request.urlopen(media, timeout=2).read()  # no cookie at all
                    answered.append(time.time() - t_click)
                except urllib.error.HTTPError:
                    break
                time.sleep(0.25)
            out["media_window"] = answered[-1] if answered else 0.0

            # 2a: deactivate sue; her open page tries 4 more comparisons
            _admin(browser, url, "sue", "⛔ Deactivate")
            labels_at = _count(db, "SELECT count(*) FROM labels WHERE annotator = 'sue'", folder)
            tries = sum(_rate(sue, dims, wait_next=False) for _ in range(4))
            out["sue_tries"], out["sue_signin_form"] = tries, sue.get_by_role("textbox", name="User name").count() > 0
            out["sue_after"] = _count(db, "SELECT count(*) FROM labels WHERE annotator = 'sue'", folder) - labels_at

            # 2b: demote lea and sign everyone out; sam labels afterwards, so refits are due
            _admin(browser, url, "lea", "Save role", role="sme", rotate=True)
            t_demoted = time.time()
            fits_at = _count(db, "SELECT count(*) FROM fits", folder)
            lea.get_by_text("User name").or_(lea.get_by_text("this page is for lead or admin")).first.wait_for(
                timeout=60_000)
            out["lea_stopped_after"] = time.time() - t_demoted
            sam = browser.new_context(viewport={"width": 1500, "height": 1100}).new_page()
            _sign_in(sam, url, "sam", "sam-password")
            for _ in range(2):
                _rate(sam, dims)
            sam.wait_for_timeout(12_000)  # two of the Decision page's 5 s refreshes
            out["fits_after"] = _count(db, "SELECT count(*) FROM fits", folder) - fits_at
            browser.close()
    finally:
        proc.terminate()
        proc.wait(20)
    return [
        {"problem": "2", "attack": "admin deactivates an SME; her open Label page then submits 4 more comparisons",
         "figure": f"{out['sue_after']} label rows saved after the revocation (issue: 16); "
                   f"{out['sue_tries']} of 4 submits reached the page, which showed the sign-in form: "
                   f"{out['sue_signin_form']}"},
        {"problem": "2", "attack": "lead demoted + 'Sign everyone out' while her Decision page is open; "
                                   "another SME labels 2 items (refits due)",
         "figure": f"the open Decision page stopped by itself, without a click (seen {out['lea_stopped_after']:.1f} s "
                   f"after the admin's page had finished; it refreshes every 5 s); fits run afterwards: {out['fits_after']}"},
        {"problem": "10", "attack": "fetch the labels export's media URL with no cookie",
         "figure": f"no export exists before a click ({out['media_before_click']} media URLs in the page); the "
                   f"click (checked server-side against the session) makes it; its URL answered cookie-less for "
                   f"{out['media_window']:.1f} s after the click, then 404"},
        {"problem": "10", "attack": "read the session cookie from JavaScript",
         "figure": f"HttpOnly: {out['httponly']} (Streamlit's script API cannot set a response header; the cookie is "
                   "SameSite=Strict, expires with the token, and no page runs script from data)"},
        {"problem": "10", "attack": "guidelines with an escaped image, data:, reference, <autolink> and bare links",
         "figure": f"{len(out['outside_links'])} links or images to an outside host or data: on the Label page"},
    ]


def run() -> list[dict]:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        a = _issue_attack(folder)
        rows.append({"problem": "3", "attack": "10 wrong passwords per lead and admin from 10 addresses, all at once",
                     "figure": f"right password from a clean address: {a['clean']}/{a['n']} accepted at once; from an "
                               f"attacking address: {a['dirty']}/{a['n']} (wait <= {a['dirty_wait']:.0f} s), "
                               f"{a['later']}/{a['n']} after 15 min, {a['days']}/{a['n']} 10 days later"})
        s = _sustained_attack(folder)
        rows.append({"problem": "3", "attack": f"{s['addresses']} addresses keep failing for the admin for 6 "
                                               "simulated hours, each as soon as allowed",
                     "figure": f"right password from a clean address: {s['clean_ok']}/{s['clean_n']} accepted at once;"
                               f" from an attacking (shared) address: in <= {s['office_max_wait']:.0f} s; "
                               f"passwords the attack got checked: {s['checked_per_day']:.0f} per day (the attacker "
                               f"shares the admin's office address, whose successes clear it); "
                               f"{_sustained_attack(folder, office=False)['checked_per_day']:.0f} per day when not"})
        g = _break_glass(folder)
        rows.append({"problem": "3", "attack": "`tiebreak users unlock` while another process holds the database",
                     "figure": f"exit {g['exit']}; before: wait {g['before_wait']:.0f} s; right password accepted at "
                               f"the next sign-in: {g['after_ok']}"})
        b = _parallel_colleagues(folder)
        rows.append({"problem": "3", "attack": f"{b['n']} SMEs behind one address sign in at the same moment",
                     "figure": f"{b['ok']}/{b['n']} signed in, {b['busy']} told 'another sign-in is being checked'; "
                               f"slowest {b['slowest']:.1f} s"})
        rows.append({"problem": "10", "attack": "create a user named 'local'", "figure": _reserved(folder)})
        rows[:0] = _app_rows(folder)
    return rows


if __name__ == "__main__":
    t = time.time()
    for r in run():
        print(f"[{r['problem']}] {r['attack']}\n      -> {r['figure']}")
    print(f"({time.time() - t:.0f} s)")
