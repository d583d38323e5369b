"""``duroxy ui``: a web dashboard over the public ``Client`` (extra ``ui``).

``create_app(client, UiSettings(...))`` gives the ASGI application; :func:`serve` runs
it with uvicorn until interrupted. :func:`check_settings` holds the starting rule: a
host that is not loopback needs a token, unless the dashboard is read-only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import webbrowser

from ..client import Client
from ._app import UiSettings, create_app

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "UiSettings", "check_settings", "create_app",
           "is_loopback", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8079
#: the environment variable the token may come from
TOKEN_ENV = "DUROXY_UI_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another name: it may resolve anywhere


def check_settings(host: str, token: str | None, read_only: bool) -> str | None:
    """Why the dashboard must not start with these settings, or ``None``."""
    if not is_loopback(host) and not token and not read_only:
        return (f"--host {host} is reachable from other machines: give a token for the "
                f"actions (--token TOKEN, or ${TOKEN_ENV}), or serve --read-only")
    return None


async def serve(client: Client, settings: UiSettings, host: str = DEFAULT_HOST,
                port: int = DEFAULT_PORT, open_browser: bool = False) -> None:
    """Serve the dashboard until interrupted (Ctrl-C, SIGTERM)."""
    import uvicorn

    config = uvicorn.Config(create_app(client, settings), host=host, port=port,
                            log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    print(f"duroxy ui: serving {settings.store} at {url}"
          + (" (read-only)" if settings.read_only else "")
          + (" (token required)" if settings.token else ""), flush=True)
    if open_browser:
        async def open_when_up() -> None:
            while not server.started:
                await asyncio.sleep(0.05)
            webbrowser.open(url)

        opener = asyncio.ensure_future(open_when_up())
    try:
        await server.serve()
    finally:
        if open_browser:
            opener.cancel()
