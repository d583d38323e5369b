"""The dashboard as an ASGI application (Starlette, Jinja2 templates rendered on the
server, one small script and one stylesheet served from the package).

Guarantees:

* It reads and acts through the ``Client`` it is given, and nothing else.
* ``read_only``: the action endpoints are not routes at all (a POST there is a 404),
  and the pages show no forms.
* With a token, every request needs it: an ``Authorization: Bearer`` header, or the
  session cookie the login form sets (HttpOnly, SameSite=Strict, a keyed hash of the
  token, never the token). Without one (allowed on a loopback host only, see
  :func:`duroxy.ui.check_settings`), anyone who reaches the port may act.
* Action endpoints (POST only) reject cross-site requests: a browser's
  ``Sec-Fetch-Site`` other than ``same-origin``/``none``, or an ``Origin`` other than
  the dashboard's own, is refused with 403 before anything is read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .._render import dumps, human_time
from ..client import Client
from ..errors import DuroxyError, InstanceNotFound
from . import _instance, _listing
from ._timeline import pretty

__all__ = ["UiSettings", "create_app"]

_HERE = Path(__file__).resolve().parent
_COOKIE = "duroxy_ui_session"
#: the list's filters, kept by its links
_FILTER_KEYS = ("state", "name", "prefix", "created_after", "created_before")
#: the list's shortcuts to recent instances
_RECENT = (("last hour", timedelta(hours=1)), ("last day", timedelta(days=1)))


@dataclass(frozen=True)
class UiSettings:
    read_only: bool = False
    #: required on every request when set
    token: str | None = None
    #: what the store is, shown in the header
    store: str = ""
    #: seconds between refreshes of a page showing a running instance
    refresh_seconds: float = 2.0


def _session_value(token: str) -> str:
    return hmac.new(token.encode(), b"duroxy-ui-session", hashlib.sha256).hexdigest()


def _instance_url(instance_id: str) -> str:
    return "/instance?" + urlencode({"id": instance_id})


Handler = Callable[[Request], Awaitable[Response]]


def create_app(client: Client, settings: UiSettings) -> Starlette:
    """The dashboard over ``client``."""
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    env = templates.env
    env.globals.update(settings=settings, instance_url=_instance_url,
                       states=_listing.STATES, human_time=human_time)
    env.filters["pretty"] = pretty
    env.filters["dumps"] = dumps
    session = _session_value(settings.token) if settings.token else None

    def authorized(request: Request) -> bool:
        if settings.token is None:
            return True
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer ") and hmac.compare_digest(
                header[7:].strip().encode(), settings.token.encode()):
            return True
        cookie = request.cookies.get(_COOKIE)
        return cookie is not None and session is not None and hmac.compare_digest(
            cookie.encode(), session.encode())

    def cross_site(request: Request) -> bool:
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return True
        origin = request.headers.get("origin")
        if origin is None:
            return False
        host = request.headers.get("host", "")
        return origin != f"{request.url.scheme}://{host}"

    def page(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if not authorized(request):
                if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                    return RedirectResponse("/login?" + urlencode({"next": str(
                        request.url.path) + ("?" + request.url.query if request.url.query
                                             else "")}), 303)
                return PlainTextResponse("a token is needed: send 'Authorization: Bearer "
                                         "TOKEN' or log in at /login", 401,
                                         headers={"WWW-Authenticate": "Bearer"})
            return await handler(request)
        return guarded

    def action(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if cross_site(request):
                return PlainTextResponse("cross-site request refused: act from the "
                                         "dashboard's own pages", 403)
            return await page(handler)(request)
        return guarded

    def render(request: Request, name: str, code: int = 200, **context: Any) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=code)

    # ------------------------------------------------------------------ pages
    async def home(request: Request) -> Response:
        return RedirectResponse("/instances", 303)

    async def instances(request: Request) -> Response:
        q = request.query_params
        try:
            state = (q.get("state") or "").upper() or None
            if state is not None and state not in _listing.STATES:
                raise ValueError(f"unknown state {state!r}")
            filters = _listing.Filters(
                state=state, name=q.get("name") or None, prefix=q.get("prefix") or None,
                created_after=_listing.parse_time(q.get("created_after")),
                created_before=_listing.parse_time(q.get("created_before")))
            trail = _listing.Trail.parse(q.get("page"), q.get("back"), q.get("n"))
            listing = await _listing.list_page(client, filters, trail.cursor)
        except ValueError as e:
            return render(request, "message.html", 400, title="Bad filter", message=str(e))
        counts = await _listing.count_states(client, filters)
        kept = {k: q[k] for k in _FILTER_KEYS if q.get(k)}

        def link(state: str | None, at: _listing.Trail | None = None) -> str:
            params = {k: v for k, v in kept.items() if k != "state"}
            if state:
                params["state"] = state
            if at is not None:
                params.update(at.params())
            return "/instances" + ("?" + urlencode(params) if params else "")

        before = trail.previous()
        now = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
        links = {
            "all": link(None), "states": {s: link(s) for s in _listing.STATES},
            "first": link(filters.state) if trail.number > 1 else None,
            "prev": link(filters.state, before) if before is not None else None,
            "next": (link(filters.state, trail.next(listing.next_cursor))
                     if listing.next_cursor is not None else None),
            "recent": {label: "/instances?" + urlencode(
                {**{k: v for k, v in kept.items() if k not in ("created_after",
                                                                "created_before")},
                 "created_after": (now - span).isoformat()})
                for label, span in _RECENT}}
        return render(request, "instances.html", listing=listing, counts=counts,
                      filters=filters, trail=trail, links=links,
                      page_size=_listing.PAGE_SIZE, count_cap=_listing.COUNT_CAP,
                      scan_limit=_listing.SCAN_LIMIT)

    async def instance(request: Request) -> Response:
        q = request.query_params
        iid = q.get("id", "")
        try:
            execution = int(q["execution"]) if q.get("execution") else None
        except ValueError:
            return render(request, "message.html", 400, title="Bad execution",
                          message=f"execution {q['execution']!r} is not a number")
        try:
            view = await _instance.load(client, iid, execution, int(time.time() * 1000))
        except (InstanceNotFound, ValueError):
            return render(request, "message.html", 404, title="Not found",
                          message=f"no instance {iid!r} in this store")
        except KeyError as e:
            return render(request, "message.html", 404, title="Not found", message=e.args[0])
        except DuroxyError as e:
            return render(request, "message.html", 500, title="Unreadable instance",
                          message=str(e))
        return render(request, "instance.html", view=view, info=view.info,
                      running=view.running, refresh=view.running,
                      done=q.get("done"), executions_shown=_instance.EXECUTIONS_SHOWN,
                      tree_shown=_instance.TREE_SHOWN)

    async def workers(request: Request) -> Response:
        everyone = request.query_params.get("all") == "1"
        rows = await client.list_workers(include_stopped=everyone)
        return render(request, "workers.html", workers=rows, everyone=everyone)

    async def login_page(request: Request) -> Response:
        return render(request, "login.html", next=request.query_params.get("next", "/"),
                      error=None)

    async def login(request: Request) -> Response:
        if cross_site(request):
            return PlainTextResponse("cross-site request refused", 403)
        form = await request.form()
        given = str(form.get("token", ""))
        target = str(form.get("next", "/"))
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        if settings.token is None or session is None:
            return RedirectResponse(target, 303)
        if not hmac.compare_digest(given.encode(), settings.token.encode()):
            return render(request, "login.html", 401, next=target, error="wrong token")
        response = RedirectResponse(target, 303)
        response.set_cookie(_COOKIE, session, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    # ------------------------------------------------------------------ actions
    async def form_of(request: Request) -> dict[str, str]:
        form = await request.form()
        return {k: str(v) for k, v in form.items()}

    def after(iid: str, done: str) -> Response:
        return RedirectResponse(_instance_url(iid) + "&" + urlencode({"done": done}), 303)

    def refused(request: Request, message: str, status: int = 400) -> Response:
        return render(request, "message.html", status, title="Not done", message=message)

    def failed(request: Request, e: Exception, status: int = 400) -> Response:
        """A client call's refusal: 404 for an unknown instance, else ``status``."""
        return refused(request, str(e), 404 if isinstance(e, InstanceNotFound) else status)

    async def send(request: Request, field: str, what: str, done: str,
                   call: Callable[[str, str, Any], Awaitable[object]]) -> Response:
        """An event or a queue message from the form: JSON data (none when blank) sent by
        ``call(instance_id, name, data)`` to the instance."""
        form = await form_of(request)
        iid, name = form.get("instance_id", ""), form.get(field, "")
        try:
            data = json.loads(form["data"]) if form.get("data", "").strip() else None
        except ValueError as e:
            return refused(request, f"the {what} is not JSON: {e}")
        try:
            await call(iid, name, data)
        except (DuroxyError, ValueError) as e:
            return failed(request, e)
        return after(iid, done.format(repr(name)))

    async def raise_event(request: Request) -> Response:
        return await send(request, "event_name", "event data", "raised event {}",
                          client.raise_event)

    async def enqueue_event(request: Request) -> Response:
        return await send(request, "queue", "message", "enqueued on {}",
                          client.enqueue_event)

    async def cancel(request: Request) -> Response:
        form = await form_of(request)
        iid = form.get("instance_id", "")
        try:
            await client.cancel_instance(iid, form.get("reason", ""))
        except (DuroxyError, ValueError) as e:
            return failed(request, e)
        return after(iid, "cancellation requested")

    async def delete(request: Request) -> Response:
        form = await form_of(request)
        iid = form.get("instance_id", "")
        try:
            deleted = await client.delete_instance(iid, force=form.get("force") == "on")
        except (DuroxyError, ValueError) as e:
            return failed(request, e, 409)
        return RedirectResponse("/instances?" + urlencode(
            {"done": f"deleted {iid!r} ({deleted} instance{'s' if deleted != 1 else ''})"}),
            303)

    routes: list[Route | Mount] = [
        Route("/", page(home)),
        Route("/instances", page(instances)),
        Route("/instance", page(instance)),
        Route("/workers", page(workers)),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static"),
    ]
    if not settings.read_only:
        routes += [
            Route("/actions/raise-event", action(raise_event), methods=["POST"]),
            Route("/actions/enqueue", action(enqueue_event), methods=["POST"]),
            Route("/actions/cancel", action(cancel), methods=["POST"]),
            Route("/actions/delete", action(delete), methods=["POST"]),
        ]
    return Starlette(routes=routes)
