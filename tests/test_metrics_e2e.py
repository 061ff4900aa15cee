"""Metrics end to end: real proxies, the shipped config, scrapes while requests flow.

``plain``: the shipped config (LiteLLM's ``prometheus`` callback not listed, so ours are on
``/plugins/metrics``) with two workers, so every count below is a total over both (our startup puts
them in multiprocess mode). Every test reads the counters before and after and asserts they moved by
exactly the requests it sent (plain, streamed, refused 402 / 400, served by a fallback), the money
counter by exactly the credits the responses say were charged. ``workers``: two workers with the
``prometheus`` callback (LiteLLM's documented multiprocess mode): ours are on LiteLLM's ``/metrics``
and the totals add up across workers there too.
"""

from __future__ import annotations

import concurrent.futures
import glob
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import proxy as proxy_support
from tests.support.proxy import MASTER_KEY, ProxyProcess

MESSAGES = [{"role": "user", "content": "hello there"}]
ECO_FIRST, ECO_SECOND = "deepinfra-llama-3.1-8b", "groq-llama-3.1-8b"
UNITS = Decimal(1_000_000)
PLUGINS = {"metrics": {"enabled": True, "sample_interval_seconds": 0.2},
           "credits": {"starting_grant": 5, "writer_interval_seconds": 0.2}}

Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def scrape(proxy: ProxyProcess, path: str = "/plugins/metrics", key: str | None = MASTER_KEY) -> Samples:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.get(proxy.url + path, headers=headers, timeout=30, follow_redirects=True)
    assert r.status_code == 200, r.text
    return parse(r.text)


def wait_for(proxy: ProxyProcess, check: Callable[[Samples], bool], timeout: float = 15.0,
             path: str = "/plugins/metrics") -> Samples:
    deadline = time.time() + timeout
    while True:
        samples = scrape(proxy, path)
        if check(samples) or time.time() > deadline:
            return samples
        time.sleep(0.1)


def chat(proxy: ProxyProcess, key: str, model: str, **body) -> httpx.Response:
    with proxy.client(key) as client:
        return client.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES, **body})


@pytest.fixture(scope="module")
def upstream(fake_server) -> dict[str, str]:
    return {e["model_name"]: e["litellm_params"]["model"].split("/", 1)[1]
            for e in proxy_support.test_config(fake_server.base_url)["model_list"]}


@pytest.fixture(scope="module")
def single(start_proxy, keys) -> ProxyProcess:
    keys.add("sk-m-ent", user_id="m-ent", metadata={"tier": "enterprise"})
    keys.add("sk-m-poor", user_id="m-poor", metadata={"tier": "enterprise"})
    return start_proxy(plugins=PLUGINS, name="plain", num_workers=2)


REQ = "litellm_plugins_requests_total"


def test_plain_requests_count_exactly_and_charges_add_up(single, fake) -> None:
    before = scrape(single)
    n, charged = 5, Decimal(0)
    for _ in range(n):
        r = chat(single, "sk-m-ent", "eco")
        assert r.status_code == 200, r.text
        charged += Decimal(r.headers["x-litellm-plugins-credits-charged"])
    labels = {"power_level": "eco", "tier": "enterprise", "model_group": ECO_FIRST, "outcome": "success"}
    units = int(charged * UNITS)
    assert units > 0

    def moved(s: Samples) -> bool:
        return (total(s, REQ, **labels) - total(before, REQ, **labels) >= n and
                total(s, "litellm_plugins_credits_charged_units_total")
                - total(before, "litellm_plugins_credits_charged_units_total") >= units)
    after = wait_for(single, moved)
    assert total(after, REQ, **labels) - total(before, REQ, **labels) == n
    assert total(after, REQ) - total(before, REQ) == n
    assert total(after, "litellm_plugins_credits_charged_units_total") \
        - total(before, "litellm_plugins_credits_charged_units_total") == units
    holds = "litellm_plugins_credits_holds_total"
    assert total(after, holds, result="placed") + total(after, holds, result="leased") \
        - total(before, holds, result="placed") - total(before, holds, result="leased") == n
    assert total(after, "litellm_plugins_credits_hold_seconds_count") \
        - total(before, "litellm_plugins_credits_hold_seconds_count") >= 1
    # every hold of these finished requests is closed again
    settled = wait_for(single, lambda s: total(s, "litellm_plugins_credits_held_units") == 0)
    assert total(settled, "litellm_plugins_credits_held_units") == 0
    assert total(settled, "litellm_plugins_writer_records_total", result="flushed") \
        > total(before, "litellm_plugins_writer_records_total", result="flushed")


def test_streamed_requests_count_once_each(single, fake) -> None:
    before = scrape(single)
    n = 3
    for _ in range(n):
        with single.client("sk-m-ent") as client:
            with client.stream("POST", "/v1/chat/completions",
                               json={"model": "eco", "messages": MESSAGES, "stream": True}) as r:
                assert r.status_code == 200
                body = "".join(r.iter_text())
        assert "[DONE]" in body
    labels = {"power_level": "eco", "model_group": ECO_FIRST, "outcome": "success"}
    after = wait_for(single, lambda s: total(s, REQ, **labels) - total(before, REQ, **labels) >= n)
    time.sleep(0.5)  # a double count would show up by now
    after = scrape(single)
    assert total(after, REQ, **labels) - total(before, REQ, **labels) == n
    assert total(after, REQ) - total(before, REQ) == n
    assert total(after, "litellm_plugins_credits_charged_units_total") \
        > total(before, "litellm_plugins_credits_charged_units_total")


def test_refusals_402_and_400_count_by_status(single, fake) -> None:
    before = scrape(single)
    poor = chat(single, "sk-m-poor", "precision", max_tokens=60000)  # worst case > 5 credits
    assert poor.status_code == 402, poor.text
    bad = chat(single, "sk-m-ent", "eco", temperature="hot")
    assert bad.status_code == 400, bad.text
    after = wait_for(single, lambda s: total(s, REQ) - total(before, REQ) >= 2)
    ref = "litellm_plugins_refusals_total"
    assert total(after, ref, status="402", type="insufficient_credits") \
        - total(before, ref, status="402", type="insufficient_credits") == 1
    assert total(after, ref, status="400") - total(before, ref, status="400") == 1
    assert total(after, ref) - total(before, ref) == 2
    assert total(after, REQ, outcome="refused", power_level="precision", tier="enterprise") \
        - total(before, REQ, outcome="refused", power_level="precision", tier="enterprise") == 1
    assert total(after, REQ, outcome="refused") - total(before, REQ, outcome="refused") == 2
    assert total(after, "litellm_plugins_credits_holds_total", result="refused") \
        - total(before, "litellm_plugins_credits_holds_total", result="refused") == 1
    assert total(after, "litellm_plugins_guard_refusals_total", status="400") \
        - total(before, "litellm_plugins_guard_refusals_total", status="400") == 1
    assert fake.provider.calls_to(path_suffix="/chat/completions") == []  # neither reached a provider


def test_fallback_is_counted_as_served_by_the_fallback(single, fake, upstream) -> None:
    before = scrape(single)
    fake.provider.fail(503, models={upstream[ECO_FIRST]})
    r = chat(single, "sk-m-ent", "eco")
    assert r.status_code == 200, r.text
    assert r.headers["x-litellm-plugins-model-group"] == ECO_SECOND
    fb = "litellm_plugins_fallbacks_total"
    after = wait_for(single, lambda s: total(s, fb) - total(before, fb) >= 1)
    assert total(after, fb, power_level="eco", model_group=ECO_SECOND) \
        - total(before, fb, power_level="eco", model_group=ECO_SECOND) == 1
    assert total(after, REQ, model_group=ECO_SECOND, outcome="success") \
        - total(before, REQ, model_group=ECO_SECOND, outcome="success") == 1
    assert total(after, REQ) - total(before, REQ) == 1


def test_forced_down_deployment_shows_in_the_circuit_gauge(single, fake) -> None:
    with single.client() as client:
        body = client.get("/plugins/health").json()
    dep = next(d for p in body["providers"] for d in p["deployments"] if d["model_group"] == "gpt-4o")
    gauge = "litellm_plugins_health_circuit_state"
    path = f"/plugins/health/deployments/{dep['model_id']}/force"
    with single.client() as client:
        assert client.post(path, json={"state": "down", "reason": "metrics test"}).status_code == 200
    try:
        after = wait_for(single, lambda s: total(s, gauge, deployment=dep["model_id"]) == 3)
        assert total(after, gauge, deployment=dep["model_id"], model_group="gpt-4o") == 3
    finally:
        with single.client() as client:
            assert client.post(path, json={"state": "auto", "reason": "done"}).status_code == 200
    back = wait_for(single, lambda s: total(s, gauge, deployment=dep["model_id"]) == 0)
    assert total(back, gauge, deployment=dep["model_id"]) == 0


def test_exposition_parses_and_follows_litellm_metrics_auth(single) -> None:
    r = httpx.get(single.url + "/plugins/metrics", timeout=30)
    assert r.status_code == 401, r.text  # require_auth_for_metrics_endpoint: LiteLLM's default (true)
    with single.client("sk-m-ent") as client:  # any valid key, as on LiteLLM's /metrics
        r = client.get("/plugins/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(r.text)}
    for family in ("litellm_plugins_requests", "litellm_plugins_writer_queue_records",
                   "litellm_plugins_writer_spool_bytes", "litellm_plugins_writer_journal_records",
                   "litellm_plugins_writer_oldest_unflushed_seconds", "litellm_plugins_credits_held_units",
                   "litellm_plugins_health_circuit_state", "litellm_plugins_writer_flush_seconds"):
        assert family in names, family
    assert 'account="' not in r.text and "litellm_plugins_account_" not in r.text  # unless opted in
    # LiteLLM's own /metrics is not mounted without its prometheus callback: one endpoint only
    assert httpx.get(single.url + "/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                     timeout=30).status_code == 404


def test_both_workers_counted_in_a_directory_of_their_own(single) -> None:
    dirs = glob.glob(f"{tempfile.gettempdir()}/litellm-plugins-metrics-{single.process.pid}-*")
    assert len(dirs) == 1, dirs
    before = scrape(single)
    n = 16
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: chat(single, "sk-m-ent", "eco").status_code, range(n)))
    assert statuses == [200] * n
    after = wait_for(single, lambda s: total(s, REQ) - total(before, REQ) >= n)
    assert total(after, REQ) - total(before, REQ) == n
    workers = {Path(p).name.rsplit("_", 1)[1] for p in glob.glob(f"{dirs[0]}/counter_*.db")}
    assert len(workers) == 2, workers


# ---- two workers, LiteLLM's prometheus callback (its multiprocess mode) ------------------------------------

def test_two_workers_add_up_on_litellm_metrics(start_proxy, keys, workdir: Path, fake) -> None:
    keys.add("sk-m-w", user_id="m-w", metadata={"tier": "enterprise"})
    multiproc = workdir / "prom"
    multiproc.mkdir()
    callbacks = proxy_support.test_config("http://x")["litellm_settings"]["callbacks"] + ["prometheus"]
    proxy = start_proxy(plugins=PLUGINS, overrides={"litellm_settings": {"callbacks": callbacks}},
                        name="workers", num_workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)})
    n = 24
    before = scrape(proxy, "/metrics")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: chat(proxy, "sk-m-w", "eco").status_code, range(n)))
    assert statuses == [200] * n
    after = wait_for(proxy, lambda s: total(s, REQ) - total(before, REQ) >= n, path="/metrics")
    time.sleep(0.5)
    after = scrape(proxy, "/metrics")
    assert total(after, REQ) - total(before, REQ) == n
    assert total(after, REQ, power_level="eco", tier="enterprise", outcome="success") \
        - total(before, REQ, power_level="eco", tier="enterprise", outcome="success") == n
    # both workers wrote samples (each its own file) and the scrape added them up
    assert len({p.name.rsplit("_", 1)[1] for p in multiproc.glob("counter_*.db")}) >= 2
    # LiteLLM's own metrics are on the same page
    assert any(name.startswith("litellm_") and not name.startswith("litellm_plugins_") for name, _ in after)
    # and ours are not served twice
    assert httpx.get(proxy.url + "/plugins/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                     timeout=30).status_code == 404
