"""``GET /plugins/ui/``: the web console's page and its hashed, pre-gzipped assets.

The page is static: it signs in with a key the user pastes (kept in ``sessionStorage``, sent as
``Authorization: Bearer`` to our ``/plugins/*`` API), so these routes need no auth and serve no data.
Assets are built from ``src/`` by ``scripts/build-console.mjs`` into ``static/`` (git-ignored,
shipped as package data); a checkout that was never built still imports and answers 503 here.

Every asset name carries its content hash, so it is cached for a year (``immutable``) and the page
itself is ``no-cache``: a new build is picked up on the next load, one round trip per asset.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

STATIC_DIR = Path(__file__).with_name("static")
MANIFEST = "manifest.json"
BASE = "/plugins/ui"

# No inline script or style, nothing from another origin: the API is same-origin, charts draw on canvas.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml"}
NOT_BUILT = ("The litellm-plugins console is not built in this installation.\n"
             "Build it with `scripts/dev-env.sh` (or `npm ci && npm run build:console`) before installing "
             "the package; the Docker image builds it in its own stage. The /plugins/* API works without it.\n")

router = APIRouter(tags=["litellm-plugins: console"])


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


def _asset(path: Path) -> Asset:
    body = path.read_bytes()
    return Asset(body=body, gzipped=gzip.compress(body, 9, mtime=0),
                 media_type=TYPES.get(path.suffix, "application/octet-stream"),
                 etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"')


@dataclass(frozen=True)
class Bundle:
    index: Asset
    assets: dict[str, Asset]


_bundle: tuple[Path, Bundle] | None = None


def load_bundle(directory: Path | None = None) -> Bundle | None:
    """Read the built files once per worker (a few hundred KB); ``None`` while there is no build,
    so building after start needs no restart."""
    global _bundle
    directory = directory or STATIC_DIR
    if _bundle is not None and _bundle[0] == directory:
        return _bundle[1]
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        assets = {name: _asset(directory / name) for name in manifest["assets"]}
        bundle = Bundle(index=_asset(directory / "index.html"), assets=assets)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    _bundle = (directory, bundle)
    return bundle


def _send(request: Request, asset: Asset, cache_control: str, extra: dict[str, str] | None = None) -> Response:
    headers = {"Cache-Control": cache_control, "ETag": asset.etag, "Vary": "Accept-Encoding", **(extra or {})}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(asset.gzipped, media_type=asset.media_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get(BASE, include_in_schema=False)
async def console_redirect() -> RedirectResponse:
    return RedirectResponse(f"{BASE}/", status_code=307)


@router.get(f"{BASE}/", include_in_schema=False)
async def console_page(request: Request) -> Response:
    bundle = load_bundle()
    if bundle is None:
        return PlainTextResponse(NOT_BUILT, status_code=503, headers=SECURITY_HEADERS)
    return _send(request, bundle.index, "no-cache", SECURITY_HEADERS)


@router.get(BASE + "/assets/{name}", include_in_schema=False)
async def console_asset(name: str, request: Request) -> Response:
    bundle = load_bundle()
    asset = bundle.assets.get(name) if bundle is not None else None
    if asset is None:
        return PlainTextResponse("not found\n", status_code=404, headers=SECURITY_HEADERS)
    return _send(request, asset, "public, max-age=31536000, immutable", {"X-Content-Type-Options": "nosniff"})
