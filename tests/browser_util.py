"""How the browser tests wait: for a settled page, never for a fixed time.

``settle(page)`` returns once the page is settled: Streamlit's script is not running (the app's
``data-test-script-state`` is ``notRunning``, no "Running..." status icon, no stale element
``[data-stale="true"]``, no loading skeleton), no draft save of the Label page's shortcut script is
due, every visible plotly chart is drawn, and neither the DOM nor a click has changed anything for
``quiet_ms`` (a MutationObserver and a click listener the helper installs in the page). A page that is
not a Streamlit app (the exported report) is settled when its charts are drawn and its DOM is quiet.
It fails with what was still pending after ``timeout`` ms (90 s by default: generous, so a loaded
machine is slow, not failing).

``rerun_mark(page)`` before an action and ``settle(page, after=mark)`` after it also wait for the
rerun the action starts (up to ``rerun_ms``; an action that starts none costs that much): a quiet
DOM right after a click may only mean the rerun has not begun yet.
"""

from __future__ import annotations

SETTLE_JS = r"""([quiet, after]) => {
  const w = window;
  if (!w.__settle) {  // installed once per document: the last change to the DOM, the runs begun
    const s = w.__settle = {last: performance.now(), runs: 0};
    new MutationObserver((records) => {
      for (const r of records) {
        const now = r.type === 'attributes' ? r.target.getAttribute(r.attributeName)
                  : r.type === 'characterData' ? r.target.data : undefined;
        if (r.type !== 'childList' && now === r.oldValue) continue;  // set to what it was: no change
        s.last = performance.now();
        if (r.attributeName === 'data-test-script-state' && now === 'running') s.runs += 1;
      }
    }).observe(document, {subtree: true, childList: true, attributes: true, characterData: true,
                          attributeOldValue: true, characterDataOldValue: true});
    document.addEventListener('click', () => { s.last = performance.now(); }, true);  // a click starts a rerun
    s.pending = () => {  // what is still pending (also the message when settling times out)
      const out = [];
      // the Label page's shortcut script saves a draft 800 ms after the last answer (a rerun)
      if (document.__tiebreakSaveTimer) out.push('a draft save due');
      const visible = (e) => e.getClientRects().length > 0;
      const app = document.querySelector('[data-testid="stApp"]');
      if (app) {
        const state = app.getAttribute('data-test-script-state');
        if (state !== 'notRunning') out.push('script state ' + state);
        if (document.querySelector('[data-testid="stStatusWidgetRunningIcon"]')) out.push('Running... shown');
        const stale = document.querySelectorAll('[data-stale="true"]').length;
        if (stale) out.push(stale + ' stale elements');
        if (document.querySelector('[data-testid="stSkeleton"]')) out.push('a skeleton (an element loading)');
      }
      const charts = app ? [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
                         : [...document.querySelectorAll('.js-plotly-plot')];
      const undrawn = charts.filter(c => visible(c) && !c.querySelector('.main-svg')).length;
      if (undrawn) out.push(undrawn + ' plotly charts not drawn');
      return out;
    };
    if (after === null) return false;  // quiet is counted from now
  }
  const s = w.__settle;
  if (after !== null) return s.runs > after;
  return s.pending().length === 0 && performance.now() - s.last >= quiet;
}"""


def rerun_mark(page) -> int:
    """The number of script runs the page has begun (installs the observer if needed)."""
    page.evaluate(SETTLE_JS, [0, -1])  # installs the observer
    return page.evaluate("() => window.__settle.runs")


def settle(page, *, quiet_ms: int = 250, timeout: int = 90_000, after: int | None = None,
           rerun_ms: int = 5_000) -> None:
    """Wait until ``page`` is settled (see the module's docstring); with ``after`` (a
    ``rerun_mark``), first until a script run began after that mark, for up to ``rerun_ms``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    if after is not None:
        try:
            page.wait_for_function(SETTLE_JS, arg=[0, after], timeout=rerun_ms, polling=100)
        except PlaywrightTimeout:
            pass  # no rerun came: settle on the page as it is
    try:
        page.wait_for_function(SETTLE_JS, arg=[quiet_ms, None], timeout=timeout, polling=100)
    except PlaywrightTimeout:
        try:
            pending = page.evaluate("() => window.__settle.pending()")
            quiet = page.evaluate("() => Math.round(performance.now() - window.__settle.last)")
        except Exception as exc:  # the page went away
            pending, quiet = [f"page not readable: {exc}"], -1
        raise AssertionError(f"the page did not settle in {timeout} ms at {page.url}: pending {pending}, "
                             f"DOM last changed {quiet} ms ago (wanted {quiet_ms} ms of quiet)") from None
