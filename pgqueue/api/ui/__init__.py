"""``GET /ui``: the web dashboard (SPEC §14), and ``GET /`` redirecting to it.

The dashboard is three static files in this package (``index.html``, ``app.css``,
``app.js``): plain HTML, CSS and JavaScript, no build step. They are public — the page asks
for a token and sends it as a Bearer header to the API, which alone decides what the token
may see. So the files hold nothing secret, and the server only serves them: read once from
the package, gzipped once, revalidated by ETag.

The Content-Security-Policy allows scripts, styles and connections to this origin only, so
a value the page displays (a payload, an error message) can never run as code even if a
rendering bug let it into the markup.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from importlib import resources
from typing import Annotated

import msgspec
from litestar import Controller, Response, get
from litestar.params import FromPath, HeaderParameter
from litestar.response import Redirect
from litestar.status_codes import HTTP_304_NOT_MODIFIED, HTTP_307_TEMPORARY_REDIRECT

from pgqueue.api.services import ServicesDep
from pgqueue.errors import NotFound

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time (an ETag makes that a 304): a new release shows at once.
    "Cache-Control": "no-cache",
}


class Asset(msgspec.Struct, frozen=True):
    """One file of the dashboard, as served."""

    media_type: str
    body: bytes
    gzipped: bytes
    etag: str


@functools.cache
def asset(name: str) -> Asset:
    """The file ``name`` of this package (one of ``_TYPES``' kinds), read and gzipped once."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if suffix not in _TYPES or "/" in name or name.startswith("."):
        raise NotFound(f"ui: there is no file {name!r}")
    path = resources.files(__name__).joinpath(name)
    if not path.is_file():
        raise NotFound(f"ui: there is no file {name!r}")
    body = path.read_bytes()
    return Asset(
        media_type=_TYPES[suffix],
        body=body,
        gzipped=gzip.compress(body, compresslevel=9, mtime=0),
        etag='"' + hashlib.sha256(body).hexdigest()[:20] + '"',
    )


def _serve(name: str, accept_encoding: str | None, if_none_match: str | None) -> Response[bytes]:
    file = asset(name)
    headers = {**_HEADERS, "ETag": file.etag, "Vary": "Accept-Encoding"}
    if if_none_match is not None and file.etag in if_none_match:
        return Response(b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers)
    if accept_encoding is not None and "gzip" in accept_encoding:
        headers["Content-Encoding"] = "gzip"
        return Response(file.gzipped, media_type=file.media_type, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


AcceptEncoding = Annotated[
    str | None, HeaderParameter(name="Accept-Encoding", required=False, max_length=1000)
]
IfNoneMatch = Annotated[
    str | None, HeaderParameter(name="If-None-Match", required=False, max_length=1000)
]


class Session(msgspec.Struct, frozen=True):
    """What the page must know before it asks for a token: whether one is needed at all."""

    auth_required: bool


class DashboardController(Controller):
    """The dashboard's page and files; outside the OpenAPI document (not an API)."""

    include_in_schema = False

    @get("/", status_code=HTTP_307_TEMPORARY_REDIRECT)
    async def root(self) -> Redirect:
        return Redirect(path="/ui", status_code=HTTP_307_TEMPORARY_REDIRECT)

    @get("/ui")
    async def page(
        self, accept_encoding: AcceptEncoding = None, if_none_match: IfNoneMatch = None
    ) -> Response[bytes]:
        return _serve("index.html", accept_encoding, if_none_match)

    @get("/ui/session.json")
    async def session(self, services: ServicesDep) -> Response[Session]:
        """Public, like the 401 any API call would give: under ``--insecure`` no sign-in."""
        return Response(
            Session(auth_required=not services.auth.insecure),
            headers={"Cache-Control": "no-store"},
        )

    @get("/ui/{name:str}")
    async def file(
        self,
        name: FromPath[str],
        accept_encoding: AcceptEncoding = None,
        if_none_match: IfNoneMatch = None,
    ) -> Response[bytes]:
        return _serve(name, accept_encoding, if_none_match)
