"""The console's asset serving without a proxy: an installation whose build output is missing still
imports and answers a clear 503; a built one serves hashed, gzip'd assets named by its manifest."""

from __future__ import annotations

import gzip
import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from litellm_plugins.console import api


@pytest.fixture
def client(monkeypatch, tmp_path):
    monkeypatch.setattr(api, "STATIC_DIR", tmp_path)
    monkeypatch.setattr(api, "_bundle", None)
    app = FastAPI()
    app.include_router(api.router)
    return TestClient(app), tmp_path


def test_missing_build_is_a_clear_503_not_an_import_error(client):
    c, _ = client
    r = c.get("/plugins/ui/")
    assert r.status_code == 503
    assert "not built" in r.text and "scripts/dev-env.sh" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert c.get("/plugins/ui/assets/app-0123456789abcdef.js").status_code == 404
    assert c.get("/plugins/ui", follow_redirects=False).headers["location"] == "/plugins/ui/"


def test_built_assets_are_served_gzipped_from_the_manifest_only(client):
    c, static = client
    (static / "index.html").write_text('<script type="module" src="assets/app-1.js"></script>')
    (static / "app-1.js").write_text("console.log('x');" * 50)
    (static / "secret.txt").write_text("not listed")
    (static / "manifest.json").write_text(json.dumps({"assets": ["app-1.js"]}))
    page = c.get("/plugins/ui/")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-cache"
    js = c.get("/plugins/ui/assets/app-1.js", headers={"Accept-Encoding": "gzip"})
    assert js.headers["content-encoding"] == "gzip" and js.headers["content-type"].startswith("text/javascript")
    assert js.text == "console.log('x');" * 50  # httpx decodes the gzip body
    assert "immutable" in js.headers["cache-control"]
    plain = c.get("/plugins/ui/assets/app-1.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and len(plain.content) > len(gzip.compress(plain.content))
    assert c.get("/plugins/ui/assets/secret.txt").status_code == 404
    assert c.get("/plugins/ui/assets/manifest.json").status_code == 404


def test_the_console_adds_only_routes_under_plugins_ui_nothing_on_the_v1_path():
    """Structural: mounting the console on LiteLLM's own proxy app (as startup does, after core's routes)
    changes no middleware, no exception handler, no LiteLLM callback list; it adds routes under
    /plugins/ui only, all after LiteLLM's /v1/* routes, so a /v1/* request matches before reaching them."""
    import litellm
    from litellm.proxy.proxy_server import app as proxy_app
    from starlette.routing import Match

    from litellm_plugins.core.routes import mount

    callback_lists = ("callbacks", "input_callback", "success_callback", "failure_callback",
                      "_async_success_callback", "_async_failure_callback", "service_callback")

    def snapshot():
        return {"middleware": [(m.cls, repr(m.kwargs)) for m in proxy_app.user_middleware],
                "stack": proxy_app.middleware_stack,
                "handlers": dict(proxy_app.exception_handlers),
                "callbacks": {n: list(getattr(litellm, n, None) or []) for n in callback_lists},
                "routes": list(proxy_app.router.routes)}

    before_routes = list(proxy_app.router.routes)
    try:
        mount(proxy_app, [])  # core's own routes first: the console's contribution is the difference
        without = snapshot()
        mount(proxy_app, [api.router])
        with_console = snapshot()
        assert with_console["middleware"] == without["middleware"]
        assert with_console["stack"] is without["stack"]
        assert with_console["handlers"] == without["handlers"]
        assert with_console["callbacks"] == without["callbacks"]
        added = [r for r in with_console["routes"] if r not in without["routes"]]
        # FastAPI >= 0.165 includes a router as one lazy entry (its routes are the router's)
        paths = [p for r in added for p in ([x.path for x in r.original_router.routes]
                                            if hasattr(r, "original_router") else [r.path])]
        assert added and paths and all(p.startswith(api.BASE) for p in paths), paths
        assert [r for r in with_console["routes"] if r not in added] == without["routes"]  # same order too
        # a chat completion is matched by LiteLLM's route, which comes before every console route
        scope = {"type": "http", "path": "/v1/chat/completions", "method": "POST", "root_path": ""}
        routes = with_console["routes"]
        first = next(i for i, r in enumerate(routes) if r.matches(scope)[0] == Match.FULL)
        assert first < min(routes.index(r) for r in added)
        assert not any(r.matches(scope)[0] != Match.NONE for r in added)
    finally:
        proxy_app.router.routes[:] = before_routes
