"""`hvdbg serve`: the TUI in a browser, through textual-serve (the optional extra `serve`).

textual-serve is a small aiohttp server whose page holds a terminal (xterm.js); each browser
connection starts one command line as a subprocess with Textual's web driver and relays its
screen and keys over a websocket. The command served is `python -m hvdbg tui ARGS`, so every
browser tab gets a session of its own, exactly as `hvdbg tui ARGS` would open it.
textual-serve is imported only here, and only when serving.
"""
from __future__ import annotations

import asyncio
import logging
import shlex
import signal
import sys

# what textual-serve puts in the app's environment (app_service.py) so that Textual talks to
# the page instead of a terminal; `hvdbg tui` then runs without a tty
WEB_DRIVER = "textual.drivers.web_driver:WebDriver"
MISSING = "hvdbg: serve needs textual-serve, which is not installed: pip install 'hvdbg[serve]'"


def in_browser(environ=None) -> bool:
    """Is this process a TUI that textual-serve started for a browser?"""
    import os
    return (environ if environ is not None else os.environ).get("TEXTUAL_DRIVER") == WEB_DRIVER


def tui_command(tui_args: list[str], python: str | None = None) -> str:
    """The shell command line textual-serve runs per connection (it uses a shell)."""
    return shlex.join([python or sys.executable, "-m", "hvdbg", "tui", *tui_args])


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def require() -> None:
    """textual-serve is importable, or a usage error (one line, exit 2) that says how to get it."""
    from .cli import UsageError
    try:
        import textual_serve.server  # noqa: F401
    except ImportError:
        raise UsageError(MISSING) from None


def serve(tui_args: list[str], host: str, port: int, out, title: str = "hvdbg") -> int:
    """Serve `hvdbg tui TUI_ARGS` on host:port until SIGINT (130) or SIGTERM (143)."""
    from .cli import EXIT_INTR, EXIT_TERM, UsageError
    require()
    from aiohttp import web
    from aiohttp.web_runner import GracefulExit
    from textual_serve.server import Server

    public = url(host, port)
    stopped_by: list[int] = []

    class _Server(Server):
        def initialize_logging(self) -> None:
            # textual-serve's rich log prints every request; keep only warnings (to stderr)
            logging.basicConfig(level=logging.WARNING, format="hvdbg serve: %(message)s", stream=sys.stderr)

        async def on_startup(self, app) -> None:       # no logo: one line once listening (below)
            pass

    server = _Server(tui_command(tui_args), host=host, port=port, title=title, public_url=public)
    server.initialize_logging()

    def stop(signum: int) -> None:
        stopped_by.append(signum)
        raise GracefulExit()

    def listening(*_ignored) -> None:
        print(f"hvdbg: serving the TUI ({shlex.join(['hvdbg', 'tui', *tui_args])}) at {public}/  (Ctrl-C stops)",
              file=out, flush=True)

    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGINT, stop, signal.SIGINT)
    loop.add_signal_handler(signal.SIGTERM, stop, signal.SIGTERM)
    # shutdown_timeout: an open page's websocket never ends by itself; after 1 s aiohttp cancels
    # the handlers and textual-serve tells each page's app to quit (Ctrl-C takes about 2 s)
    try:
        web.run_app(server._make_app(), host=host, port=port, handle_signals=False, loop=loop,
                    print=listening, access_log=None, shutdown_timeout=1)
    except OSError as e:
        raise UsageError(f"hvdbg: serve: cannot listen on {public}: {e.strerror or e}") from None
    finally:
        if not loop.is_closed():
            loop.close()
    return EXIT_TERM if stopped_by == [signal.SIGTERM] else EXIT_INTR
