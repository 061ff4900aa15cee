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
