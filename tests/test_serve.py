"""`hvdbg serve` (issue 11): the TUI in a browser through textual-serve, driven end to end.

The server runs as a subprocess (`python -m hvdbg serve --port P cpu-offline`); headless Chromium
(Debian's package, driven by Playwright, no browser download) opens the page and the test reads
what the page's terminal shows. textual-serve's page draws the screen with xterm.js into a canvas
(WebGL or 2D), so there is no text in the DOM or the accessibility tree; instead an init script
catches the xterm.js `Terminal` object when the page's script stores it (`this.terminal = new
Terminal(...)`, textual_serve/static/js/textual.js) and the test reads the terminal's own screen
buffer (`buffer.active.getLine(y).translateToString()`): the characters xterm.js has drawn.

`make test-browser` installs what this needs (the `chromium` Debian package and the extras
`serve` and `browser`) and runs only this file; `make fuzz` runs it too and skips it, with the
reason, where something is missing.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0        # server listening
SCREEN_TIMEOUT = 30.0       # the first screen in the page
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Runs before the page's own scripts: the first object that gets a `terminal` property is
# textual.js's terminal wrapper; keep what it stores (the xterm.js Terminal) in window.__hvdbgTerms
# and make it an ordinary own property of that object, so the page works as before.
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  get() { return undefined; },
  set(value) {
    Object.defineProperty(this, "terminal", {value, writable: true, configurable: true, enumerable: true});
    if (value && value.buffer && value.buffer.active) (window.__hvdbgTerms = window.__hvdbgTerms || []).push(value);
  },
});
"""
READ_SCREEN = """() => {
  const t = (window.__hvdbgTerms || [])[0];
  if (!t) return null;
  const b = t.buffer.active, rows = [];
  for (let y = 0; y < t.rows; y++) { const l = b.getLine(b.viewportY + y); rows.push(l ? l.translateToString(true) : ""); }
  return rows.join("\\n");
}"""


def _missing(reason: str):
    """Skip - or fail where a browser run was asked for (`make test-browser` sets HVDBG_BROWSER_TEST=1,
    so CI cannot pass by skipping)."""
    if os.environ.get("HVDBG_BROWSER_TEST") == "1":
        pytest.fail(f"HVDBG_BROWSER_TEST=1 but {reason}")
    pytest.skip(reason)


def _chromium() -> str | None:
    return os.environ.get("HVDBG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)       # serve (and the apps it starts) import this checkout's hvdbg
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("TEXTUAL_DRIVER", None)
    return env


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def served(request, tmp_path):
    """`hvdbg serve --port P cpu-offline` listening on 127.0.0.1; (process, port, log path).
    The server and anything it started are killed at the end, whatever happened."""
    try:
        import textual_serve  # noqa: F401
    except ImportError:
        _missing("textual-serve is not installed (make browser, or pip install -e '.[serve]')")
    port = _free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "hvdbg", "serve", "--port", str(port), "cpu-offline"],
                                cwd=ROOT, env=_env(), stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)      # its own process group: the apps die with it

    def kill():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
    request.addfinalizer(kill)

    deadline = time.monotonic() + START_TIMEOUT
    while not _answers(port):
        if proc.poll() is not None:
            pytest.fail(f"hvdbg serve exited {proc.returncode} before listening:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"hvdbg serve did not listen on 127.0.0.1:{port} within {START_TIMEOUT:.0f} s:\n"
                        f"{log.read_text()}")
        time.sleep(0.1)
    return proc, port, log


@pytest.fixture
def browser():
    """Headless Chromium (the system's) under Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed (make browser, or pip install -e '.[browser]')")
    exe = _chromium()
    if not exe:
        _missing("no chromium binary (make browser installs the Debian package `chromium`)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_serve_first_screen_in_browser(browser, served, tmp_path):
    proc, port, log = served
    base = f"http://127.0.0.1:{port}"
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    # hermetic: the page also asks a web font service for its font; nothing leaves the machine
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base) else route.abort())
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.add_init_script(CATCH_TERMINAL)
    page.goto(base + "/", wait_until="domcontentloaded")

    text = None
    deadline = time.monotonic() + SCREEN_TIMEOUT
    while time.monotonic() < deadline:
        text = page.evaluate(READ_SCREEN)
        if text and all(w in text for w in ("cpu0", "cpu1", "step")):
            break
        time.sleep(0.25)
    else:
        page.screenshot(path=str(tmp_path / "page.png"))
        caught = "no xterm.js terminal caught in the page" if text is None else f"the page's terminal shows:\n{text}"
        pytest.fail(f"the first screen did not show up within {SCREEN_TIMEOUT:.0f} s ({caught}); "
                    f"page errors: {errors}; screenshot {tmp_path / 'page.png'}; server log:\n{log.read_text()}")

    # the panes of the first screen: both vCPUs, the status line at the end of the seed hang
    first = text.splitlines()[0]
    assert "step" in first and "HANG" in first, text
    assert "cpu0" in text and "cpu1" in text
    assert "-first-byte" in page.evaluate("document.body.className")     # textual-serve's own "app drew" mark
    assert errors == []
    assert log.read_text().splitlines()[0] == \
        f"hvdbg: serving the TUI (hvdbg tui cpu-offline) at {base}/  (Ctrl-C stops)"

    # Ctrl-C with a page open: exit 130, as the rest of the CLI
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 130, log.read_text()


def test_serve_without_textual_serve_says_how_to_get_it():
    code = ("import sys; sys.modules['textual_serve'] = None\n"
            "from hvdbg.cli import main; raise SystemExit(main(['serve', 'cpu-offline']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.splitlines() == ["hvdbg: serve needs textual-serve, which is not installed: "
                                     "pip install 'hvdbg[serve]'"]


def test_serve_command_line_is_quoted():
    from hvdbg.serve import tui_command, url
    cmd = tui_command(["--seed=3", "--", "-odd name;rm.toml"], python="/opt/py thon/bin/python")
    assert cmd == "'/opt/py thon/bin/python' -m hvdbg tui --seed=3 -- '-odd name;rm.toml'"
    assert url("::1", 8000) == "http://[::1]:8000"
