"""Every dashboard page in a real browser: `streamlit run dashboards/app.py` on 127.0.0.1 (a free port) over
the demo runs root (conftest.py), driven by Playwright with the system's Chromium (Debian package
`chromium`; no browser download). Each page must load without an exception on the page, and each chart
must contain drawn marks: lines with a visible extent and points with a visible size, counted in the SVG
that Vega renders (ui.RENDER_OPTIONS asks for the SVG renderer). AppTest cannot see any of this.

    python -m pytest -q tests/dashboards/test_browser.py
    DSPARK_LAB_SCREENSHOTS=/tmp/shots python -m pytest -q tests/dashboards/test_browser.py   # PNG per page

Skips (with the reason) only when no Chromium binary or no playwright package is installed; CI installs
both (.ci/run, the dev extra) and sets DSPARK_LAB_REQUIRE_BROWSER=1, which turns that skip into a failure.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PAGE_TIMEOUT_MS = 90_000

# Per chart, in page order: (drawn line paths at least, drawn points at least). A line is drawn when its
# path has a visible extent; a point when its symbol has a visible size.
CHARTS = {
    "Acceptance": [(3, 12), (3, 12)],  # survival, conditional: 3 drafters x 2 datasets (ngram gsm8k too)
    # the diagonal + raw + STS lines; a visible point per reliability bin: 3 positions x 2 confidences x 2
    # variants (a size encoding on the line itself drew 1-pixel specks: tests/dashboards/conftest.py)
    "Calibration": [(3, 12)],
    "Throughput_vs_SLA": [(3, 6)],  # 3 policies x 2 concurrency points
    "Compare_runs": [(3, 12), (3, 12), (2, 6), (2, 4), (3, 6)],  # A curves, B curves (c_3 of B: none reached), A frontier
}

# What each chart's SVG holds: line paths / symbol paths with a visible size, rules, text labels.
COUNT_MARKS = """
() => Array.from(document.querySelectorAll('[data-testid="stVegaLiteChart"]')).map(chart => {
  const svg = chart.querySelector('svg.marks');
  if (!svg) return {svg: false, lines: 0, points: 0, rules: 0, texts: []};
  const paints = (el, what) => {  // a stroke or fill that shows: a colour, not transparent, some width
    const s = getComputedStyle(el), v = el.getAttribute(what) || s[what];
    const alpha = parseFloat(el.getAttribute(what + '-opacity') || s[what + 'Opacity'] || '1');
    const width = what === 'stroke' ? parseFloat(el.getAttribute('stroke-width') || s.strokeWidth || '1') : 1;
    return v && v !== 'none' && v !== 'transparent' && alpha > 0 && width > 0;
  };
  const shown = el => parseFloat(el.getAttribute('opacity') || getComputedStyle(el).opacity || '1') > 0;
  const line = p => { const b = p.getBBox(); return shown(p) && paints(p, 'stroke') && b.width + b.height >= 6; };
  const point = p => { const b = p.getBBox();
    return shown(p) && (paints(p, 'fill') || paints(p, 'stroke')) && b.width >= 4 && b.height >= 4; };
  const marks = sel => Array.from(svg.querySelectorAll(sel));
  return {
    svg: true,
    lines: marks('g.mark-line.role-mark path').filter(line).length,
    points: marks('g.mark-symbol.role-mark path').filter(point).length,
    rules: marks('g.mark-rule.role-mark line').length,
    texts: marks('g.mark-text.role-mark text').map(t => t.textContent),
  };
})
"""


def _chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit and Path(explicit).is_file():
        return explicit
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unavailable(reason: str):
    if os.environ.get("DSPARK_LAB_REQUIRE_BROWSER"):  # CI (.ci/run) installs both: missing is a failure
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright import sync_api
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    binary = _chromium()
    if binary is None:
        _unavailable(f"no Chromium binary ({', '.join(CHROMIUM_NAMES)} or $CHROMIUM): apt-get install chromium")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=binary, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def app_url(runs_root, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    env = {**os.environ, "DSPARK_LAB_RUNS": str(runs_root["root"]), "PYTHONPATH": str(ROOT),
           "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboards" / "app.py"),
           "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _open(browser, url: str, path: str, charts: int = 0):
    """Open a page, wait until its script has finished and `charts` charts have an SVG; return the page."""
    # tall when taking screenshots: Streamlit scrolls its main area, so a full-page shot is the viewport
    height = 3000 if os.environ.get("DSPARK_LAB_SCREENSHOTS") else 1000
    page = browser.new_page(viewport={"width": 1400, "height": height})
    page.goto(f"{url}/{path}", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=PAGE_TIMEOUT_MS)
    _settle(page, charts)
    return page


def _settle(page, charts: int = 0):
    if charts:
        page.wait_for_function(
            f"document.querySelectorAll('[data-testid=\"stVegaLiteChart\"] svg.marks').length >= {charts}",
            timeout=PAGE_TIMEOUT_MS,
        )
    # the script has finished when the "Running..." status widget is gone for a moment
    quiet_since = time.monotonic()
    deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
    while time.monotonic() - quiet_since < 1.0 and time.monotonic() < deadline:
        if page.locator('[data-testid="stStatusWidget"]').count():
            quiet_since = time.monotonic()
        page.wait_for_timeout(200)


def _check(page, name: str) -> None:
    shots = os.environ.get("DSPARK_LAB_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(shots) / f"{name}.png"))
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()[:2000]
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.first.inner_text()[:500]
    assert "Traceback" not in page.inner_text("body")


@pytest.mark.parametrize("path", ["", "Runs", "Prompt_viewer"])
def test_page_loads(browser, app_url, path):
    page = _open(browser, app_url, path)
    _check(page, path or "home")
    if path == "Prompt_viewer":  # dspark, prompt p0: two rounds of 3 accepted drafts each
        assert page.locator(".decoded span.draft").all_inner_texts() == ["w1 w2 w3 ", "w5 w6 w7 "]
    page.close()


@pytest.mark.parametrize("path", list(CHARTS))
def test_page_draws_its_charts(browser, app_url, path):
    expected = CHARTS[path]
    page = _open(browser, app_url, path, charts=len(expected))
    _check(page, path)
    marks = page.evaluate(COUNT_MARKS)
    assert len(marks) == len(expected), (path, marks)
    for i, ((lines, points), got) in enumerate(zip(expected, marks)):
        assert got["svg"], (path, i, "chart not rendered as SVG")
        assert got["lines"] >= lines and got["points"] >= points, (path, i, got)
    if path == "Throughput_vs_SLA":
        assert marks[0]["rules"] == 2 and {"SLA 100 tok/s/user", "SLA 200 tok/s/user"} <= set(marks[0]["texts"])
    page.close()


def test_live_ablation_draws_after_a_run(browser, app_url):
    page = _open(browser, app_url, "Live_ablation")
    page.get_by_text("parametric", exact=True).click()
    _settle(page)
    assert page.get_by_text("Parametric alpha (per-position rate)").count() == 1
    page.get_by_role("button", name="Run simulation").click()
    _settle(page, charts=2)
    _check(page, "Live_ablation")
    frontier, load = page.evaluate(COUNT_MARKS)
    assert frontier["lines"] >= 4 and frontier["points"] >= 12, frontier  # mtp1, fixed_k2, fixed_k3, prefix x 3
    assert load["lines"] >= 4 and load["points"] >= 12, load
    # trace mode: the parametric controls are gone
    page.get_by_text("run traces", exact=True).click()
    page.get_by_text("MTP-1 baseline: the run's 'mtp' traces", exact=False).wait_for(timeout=PAGE_TIMEOUT_MS)
    # the rerun removes the parametric controls (stale elements fade first, then go)
    page.get_by_text("Parametric alpha (per-position rate)").wait_for(state="detached", timeout=PAGE_TIMEOUT_MS)
    page.close()


# Each request's rules (arrival -> first token, first token -> finish) on a row of its own: distinct heights
RULE_ROWS = """
() => Array.from(document.querySelectorAll('[data-testid="stVegaLiteChart"] svg.marks')).map(svg =>
  new Set(Array.from(svg.querySelectorAll('g.mark-rule.role-mark line')).map(l => {
    const b = l.getBoundingClientRect(); return Math.round(b.top + b.height / 2); })).size)
"""


def test_engine_fidelity_draws_its_charts(browser, app_url, engine_root):
    """The engine runs root typed into the sidebar (one server for both roots): ECDFs, a row per request in
    both timelines, the acceptance curves, one step-profile panel per batch size."""
    page = _open(browser, app_url, "Engine_fidelity")
    box = page.get_by_label("Runs root", exact=True)
    box.fill(str(engine_root["root"]))
    box.press("Enter")
    _settle(page, charts=7)
    _check(page, "Engine_fidelity")
    ttft, tpot, vllm, sim, survival, conditional, profile = page.evaluate(COUNT_MARKS)
    for ecdf in (ttft, tpot):
        assert ecdf["lines"] >= 2 and ecdf["points"] >= 8, ecdf  # vLLM and the simulator, 4 requests each
    for timeline in (vllm, sim):
        assert timeline["rules"] == 8, timeline  # 4 requests x (to first token, decoding)
    assert page.evaluate(RULE_ROWS)[2:4] == [4, 4]
    for curve in (survival, conditional):
        assert curve["lines"] >= 1 and curve["points"] >= 4, curve  # ngram low and high (identical counters)
    assert profile["lines"] >= 4 and profile["points"] >= 8, profile  # 2 batch panels x 2 context lengths
    page.close()
