"""How the dashboard's files are served (pgqueue/api/ui): over real HTTP, no browser needed.

The browser tests (tests/ui) show the dashboard works; these pin what a proxy, a cache or an
attacker meets: the redirect, gzip, ETags, the security headers, the 404s, and that the page
learns whether it must ask for a token without any API call failing.
"""

from __future__ import annotations

import gzip

import httpx
import pytest

from pgqueue.api.ui import asset
from pgqueue.settings import Settings
from tests.api.conftest import Api, serving

FILES = ("index.html", "app.css", "app.js")


async def test_root_redirects_to_the_dashboard(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as http:
        resp = await http.get("/")
    assert resp.status_code == 307
    assert resp.headers["location"] == "/ui"


@pytest.mark.parametrize("path", ["/ui", "/ui/app.css", "/ui/app.js"])
async def test_files_are_public_gzipped_and_revalidated(api: Api, path: str) -> None:
    async with httpx.AsyncClient(base_url=api.url) as http:
        resp = await http.get(path, headers={"Accept-Encoding": "gzip"})
        assert resp.status_code == 200
        assert resp.headers["content-encoding"] == "gzip"
        assert int(resp.headers["content-length"]) < len(resp.content)  # sent compressed
        assert "script-src 'self'" in resp.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
        assert resp.headers["x-content-type-options"] == "nosniff"
        again = await http.get(path, headers={"If-None-Match": resp.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""
        plain = await http.get(path, headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.content == resp.content


@pytest.mark.parametrize(
    "name", ["nope.js", "__init__.py", ".hidden.js", "..%2F__init__.py", "app.js.map"]
)
async def test_anything_else_under_ui_is_a_json_404(api: Api, name: str) -> None:
    async with httpx.AsyncClient(base_url=api.url) as http:
        resp = await http.get(f"/ui/{name}")
    assert resp.status_code == 404
    assert resp.json()["status_code"] == 404


async def test_the_page_learns_whether_a_token_is_needed(api: Api, api_settings: Settings) -> None:
    async with httpx.AsyncClient(base_url=api.url) as http:
        resp = await http.get("/ui/session.json")
    assert resp.json() == {"auth_required": True}
    async with serving(api_settings, insecure=True) as url, httpx.AsyncClient(base_url=url) as http:
        resp = await http.get("/ui/session.json")
    assert resp.json() == {"auth_required": False}


def test_the_files_are_package_data_small_enough_for_the_first_view() -> None:
    """SPEC §14: the first view transfers at most 200 KB (tests/ui measures it in a browser)."""
    total = sum(len(asset(name).gzipped) for name in FILES)
    assert total < 100 * 1024
    for name in FILES:
        assert gzip.decompress(asset(name).gzipped) == asset(name).body


async def test_the_dashboard_is_not_in_the_openapi_document(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as http:
        paths = (await http.get("/schema/openapi.json")).json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/ui")]
