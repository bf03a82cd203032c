"""The studio's web layer: a Starlette application over one ``StudioSession``.

Every request needs the session's token, from the query string (``?token=``), the
``X-SSVAE-Token`` header, or the cookie that the page's first load sets; anything else is
refused with 403 before a route runs. The cookie's name is derived from the token
(``cookie_name``), so studios on other ports of the same host, each with its own
token, keep their own cookies in one browser. The application serves its own API, the page's
files from the package (an explicit list: no path from a request reaches the file
system) and the Plotly.js bundled with the ``plotly`` package; nothing else.

Bad input gets a 4xx reply ``{"error": "..."}`` naming what was wrong and what is
allowed, and changes nothing. A body must be ``application/json``, at most
``MAX_BODY_BYTES`` long and ``MAX_JSON_DEPTH`` levels deep; error messages are cut to
``MAX_ERROR_CHARS`` characters (they never echo a whole oversized value back).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ssvae_core.errors import ConfigError, SSVAEError
from ssvae_core.runs.run import Run
from ssvae_core.studio.session import DEFAULT_PROJECTION, StudioError, StudioSession

TOKEN_COOKIE = "ssvae_studio_token"
TOKEN_HEADER = "x-ssvae-token"
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_JSON_DEPTH = 8
MAX_ERROR_CHARS = 400
DEFAULT_PORT = 8765
PAGE_FILES = ("index.html", "studio.js", "studio.css")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8"}


def new_token() -> str:
    """A random access token (32 bytes, URL-safe)."""
    return secrets.token_urlsafe(32)


def cookie_name(token: str) -> str:
    """The name of the cookie that carries ``token``: one per token, so that two studios
    open in one browser (cookies are shared by every port of a host) never overwrite
    each other's."""
    digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:16]
    return f"{TOKEN_COOKIE}_{digest}"


def _error(status: int, message: str) -> JSONResponse:
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return JSONResponse({"error": message}, status_code=status)


class TokenGate:
    """ASGI middleware: 403 for every HTTP request without the right token."""

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self.token = token
        self.cookie = cookie_name(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        offered = (
            request.query_params.get("token")
            or request.headers.get(TOKEN_HEADER)
            or request.cookies.get(self.cookie)
            or ""
        )
        if not secrets.compare_digest(offered.encode("utf-8", "replace"), self.token.encode("utf-8")):
            response = _error(
                403,
                "missing or wrong access token: open the URL that `ssvae studio` printed "
                "(it ends in ?token=...)",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _static_dir() -> Path:
    return Path(str(resources.files("ssvae_core.studio") / "static"))


def _plotly_js() -> Path | None:
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def _depth(value: Any) -> int:
    """How deeply ``value`` (parsed JSON) nests lists and objects, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


async def _body(request: Request) -> Any:
    """The request's JSON body; a ``StudioError`` for anything else."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise StudioError(
            415, f"the body must be sent as application/json; got {kind or 'no content type'!r:.60}"
        )
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise StudioError(413, f"the body is {len(raw)} bytes; at most {MAX_BODY_BYTES} are accepted")
    if not raw:
        raise StudioError(400, "the body is empty; send a JSON object")
    try:
        value = json.loads(raw.decode("utf-8"))
    except RecursionError:
        value = None
        raw = b""
    except (UnicodeDecodeError, ValueError) as error:
        raise StudioError(400, f"the body is not valid JSON: {error}") from None
    if not raw or _depth(value) > MAX_JSON_DEPTH:
        raise StudioError(400, f"the body nests lists and objects more than {MAX_JSON_DEPTH} levels deep")
    return value


def _int_param(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise StudioError(400, f"{name} must be an integer; got {text!r}") from None


def _path_int(request: Request, name: str) -> int:
    text = request.path_params[name]
    if not text.isdigit() or len(text) > 18:
        raise StudioError(404, f"{name} must be a non-negative integer; got {text!r}")
    return int(text)


Handler = Callable[[Request], Awaitable[Response]]


def _guarded(handler: Handler) -> Handler:
    """Turn the session's ``StudioError`` (and other bad input) into a 4xx reply."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except StudioError as error:
            return _error(error.status, str(error))
        except SSVAEError as error:
            return _error(400, str(error))

    return run


def create_app(session: StudioSession, token: str) -> Starlette:
    """The studio application for ``session``, guarded by ``token``."""
    if not isinstance(token, str) or len(token) < 8:
        raise ConfigError("the studio's access token must be a string of at least 8 characters")

    async def not_found(request: Request, error: Exception) -> Response:
        return _error(404, f"no such page: {request.url.path}")

    async def wrong_method(request: Request, error: Exception) -> Response:
        return _error(405, f"{request.method} is not allowed on {request.url.path}")

    app = Starlette(
        routes=[*_page_routes(token), *_api_routes(session)],
        exception_handlers={404: not_found, 405: wrong_method},
    )
    app.add_middleware(TokenGate, token=token)
    return app


def _threaded(method: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``method`` run in the thread pool, so that the event loop keeps serving."""

    async def call(*args: Any) -> Any:
        return await run_in_threadpool(method, *args)

    return call


def _page_routes(token: str) -> list[Route]:
    """The page and its static files (the page sets the token's cookie)."""
    static = _static_dir()
    plotly_js = _plotly_js()

    async def page(request: Request) -> Response:
        response = FileResponse(static / "index.html", media_type=_TYPES[".html"])
        response.headers["Cache-Control"] = "no-store"
        if request.query_params.get("token"):
            response.set_cookie(cookie_name(token), token, httponly=True, samesite="strict", path="/")
        return response

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "plotly.min.js" and plotly_js is not None:
            return FileResponse(plotly_js, media_type=_TYPES[".js"])
        if name not in PAGE_FILES:
            raise StudioError(404, f"no static file {name!r}")
        return FileResponse(static / name, media_type=_TYPES[Path(name).suffix])

    return [
        Route("/", _guarded(page), methods=["GET"]),
        Route("/static/{name}", _guarded(static_file), methods=["GET"]),
    ]


def _api_routes(session: StudioSession) -> list[Route]:
    """The JSON and image API the page calls, each answered by ``session``."""
    async def state(request: Request) -> Response:
        return JSONResponse(await _threaded(session.state)())

    async def latent_map(request: Request) -> Response:
        projection = request.query_params.get("projection", DEFAULT_PROJECTION)
        return JSONResponse(await _threaded(session.latent_map)(projection))

    async def example(request: Request) -> Response:
        return JSONResponse(await _threaded(session.example)(_path_int(request, "index")))

    async def example_png(request: Request) -> Response:
        data = await _threaded(session.example_png)(_path_int(request, "index"))
        return Response(data, media_type="image/png")

    async def queue(request: Request) -> Response:
        strategy = request.query_params.get("strategy", "margin")
        n = _int_param(request, "n", 10)
        return JSONResponse(await _threaded(session.queue)(strategy, n))

    async def issues(request: Request) -> Response:
        return JSONResponse(await _threaded(session.issues)(_int_param(request, "n", 20)))

    async def export(request: Request) -> Response:
        suffix = "." + request.path_params["kind"]
        if suffix not in (".csv", ".json"):
            raise StudioError(404, "labels are exported as /api/export.csv or /api/export.json")
        text = await _threaded(session.export)(suffix)
        media = "text/csv; charset=utf-8" if suffix == ".csv" else "application/json"
        name = f"{session.out.name}-labels{suffix}".replace('"', "")
        return Response(text, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def labels(request: Request) -> Response:
        return JSONResponse(await _threaded(session.add_labels)(await _body(request)))

    async def undo(request: Request) -> Response:
        return JSONResponse(await _threaded(session.undo)(await _body(request)))

    async def channels(request: Request) -> Response:
        return JSONResponse(await _threaded(session.channels)())

    async def channel_png(request: Request) -> Response:
        data = await _threaded(session.channel_png)(_path_int(request, "channel"))
        return Response(data, media_type="image/png")

    async def retrain(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(session.retrain_status())
        return JSONResponse(await _threaded(session.start_retrain)(await _body(request)), status_code=202)

    async def cancel(request: Request) -> Response:
        return JSONResponse(session.cancel_retrain())

    async def history(request: Request) -> Response:
        return JSONResponse(await _threaded(session.history)())

    return [
        Route("/api/state", _guarded(state), methods=["GET"]),
        Route("/api/map", _guarded(latent_map), methods=["GET"]),
        Route("/api/examples/{index}.png", _guarded(example_png), methods=["GET"]),
        Route("/api/examples/{index}", _guarded(example), methods=["GET"]),
        Route("/api/queue", _guarded(queue), methods=["GET"]),
        Route("/api/labels", _guarded(labels), methods=["POST"]),
        Route("/api/issues", _guarded(issues), methods=["GET"]),
        Route("/api/export.{kind:str}", _guarded(export), methods=["GET"]),
        Route("/api/undo", _guarded(undo), methods=["POST"]),
        Route("/api/channels/{channel}.png", _guarded(channel_png), methods=["GET"]),
        Route("/api/channels", _guarded(channels), methods=["GET"]),
        Route("/api/retrain", _guarded(retrain), methods=["GET", "POST"]),
        Route("/api/retrain/cancel", _guarded(cancel), methods=["POST"]),
        Route("/api/history", _guarded(history), methods=["GET"]),
    ]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (a loopback name or address)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    import ipaddress

    return all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def serve(
    run_dir: str,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = None,
    data: str | None = None,
    test_data: str | None = None,
    open_browser: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Open ``run_dir`` and serve the studio until interrupted (Ctrl+C)."""
    import uvicorn

    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"--port must be from 0 (any free port) to 65535; got {port!r}")
    token = new_token() if token is None else token
    Run.open(run_dir, "studio", data=data, test_data=test_data).require_checkpoint("before opening it in the studio")
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)  # connections wait in the backlog until the server accepts them
    except OSError as error:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {error.strerror or error}; choose another --port "
            "(0 picks a free one) or --host"
        ) from None
    try:
        session = StudioSession(run_dir, data=data, test_data=test_data)
    except BaseException:
        sock.close()
        raise
    try:
        app = create_app(session, token)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}/?token={token}"
        if not is_loopback(host):
            print(
                f"warning: --host {host} makes the studio reachable from other machines; anyone "
                "with the URL can label this run",
                file=sys.stderr,
            )
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        if on_ready is not None:
            on_ready(url)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        server.run(sockets=[sock])
    finally:
        session.close()
        sock.close()
