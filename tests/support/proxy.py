"""Start the real ``litellm`` CLI with a test variant of ``proxy_config.yaml``.

The variant keeps the operator's config — models, callbacks, ``litellm_plugins:`` — and changes only
what a test machine needs: every provider's ``api_base`` points at the fake provider, platform keys
are recognisable test strings, auth goes through ``tests.support.custom_auth``.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.fake_provider import free_port

ROOT = Path(__file__).resolve().parents[2]
PROXY_CONFIG = ROOT / "proxy_config.yaml"
MASTER_KEY = "sk-test-master-0000"
STARTUP_HOOK = "litellm_plugins.core.startup:start"
# Providers LiteLLM talks to in a non-OpenAI wire format; the fake speaks only OpenAI's, so their
# test deployments go through LiteLLM's OpenAI client (same model name, same prices).
NON_OPENAI_WIRE = ("anthropic/", "ollama_chat/", "ollama/")
# The litellm CLI reads these options from the environment (click ``envvar=``): a value inherited
# from the machine running the tests would silently change the proxy under test (e.g.
# MAX_REQUESTS_BEFORE_RESTART makes a one-worker proxy exit after that many requests).
LITELLM_CLI_ENV = ("HOST", "PORT", "NUM_WORKERS", "DEBUG", "DETAILED_DEBUG", "KEEPALIVE_TIMEOUT",
                   "MAX_REQUESTS_BEFORE_RESTART", "MAX_REQUESTS_BEFORE_RESTART_JITTER",
                   "LIMIT_CONCURRENCY", "GRANIAN_RUNTIME_THREADS", "SSL_KEYFILE_PATH",
                   "SSL_CERTFILE_PATH", "USE_V2_MIGRATION_RESOLVER", "PROMETHEUS_METRICS_PORT")


def platform_key(model: str) -> str:
    provider = model.split("/", 1)[0]
    return f"sk-platform-{provider}"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def test_config(fake_base_url: str, overrides: dict[str, Any] | None = None,
                platform_keys: bool = True, native_wire: tuple[str, ...] = ()) -> dict[str, Any]:
    """``native_wire``: prefixes of ``NON_OPENAI_WIRE`` kept in their own wire format (the fake speaks
    Anthropic's ``/v1/messages`` too): ``("anthropic/",)`` sends those deployments through LiteLLM's
    Anthropic translation, ``api_base`` the fake's root (LiteLLM appends ``/v1/messages``).

    ``platform_keys=False`` mirrors a fresh machine: every ``os.environ/`` reference of the shipped
    ``model_list`` stays as shipped (unset in the proxy's environment: provider keys are stripped,
    ``VLLM_API_BASE`` / ``OLLAMA_API_BASE`` are not set); deployments with a key reference still
    point at the fake, so a BYOK caller's call reaches it."""
    config = yaml.safe_load(PROXY_CONFIG.read_text())
    for entry in config["model_list"]:
        params = entry["litellm_params"]
        if "mock_response" in params:
            continue
        model = params["model"]
        native = model.startswith(native_wire) if native_wire else False
        if model.startswith(NON_OPENAI_WIRE) and not native:
            params["model"] = "openai/" + model.split("/", 1)[1]
            params["custom_llm_provider"] = "openai"
        if not platform_keys:
            if not str(params.get("api_base", "")).startswith("os.environ/"):
                params["api_base"] = fake_base_url.removesuffix("/v1") if native else fake_base_url
            continue
        params["api_base"] = fake_base_url.removesuffix("/v1") if native else fake_base_url
        params["api_key"] = platform_key(model)
    config.setdefault("general_settings", {})["custom_auth"] = "tests.support.custom_auth.authenticate"
    return deep_merge(config, overrides or {})


class KeyFile:
    """Test virtual keys (read by tests.support.custom_auth inside the proxy)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: dict[str, dict[str, Any]] = {}
        self._write()

    def add(self, key: str, user_id: str | None = None, team_id: str | None = None,
            models: list[str] | None = None, metadata: dict[str, Any] | None = None,
            team_metadata: dict[str, Any] | None = None, user_role: str | None = None,
            auth: dict[str, Any] | None = None) -> str:
        """``auth``: further ``UserAPIKeyAuth`` fields of a LiteLLM virtual key, e.g.
        ``{"max_budget": 0.01, "spend": 0.0}`` (LiteLLM's own key budget)."""
        spec: dict[str, Any] = {"user_id": user_id, "team_id": team_id, "models": models or [],
                                "metadata": metadata or {}, "team_metadata": team_metadata or {}}
        if user_role:
            spec["user_role"] = user_role
        if auth:
            spec["auth"] = auth
        self.keys[key] = spec
        self._write()
        return key

    def add_users(self, keys_to_users: dict[str, str], metadata: dict[str, Any] | None = None) -> None:
        """Many plain user keys in one write (a crowd of accounts: one rewrite per key is quadratic)."""
        for key, user_id in keys_to_users.items():
            self.keys[key] = {"user_id": user_id, "team_id": None, "models": [], "metadata": metadata or {},
                              "team_metadata": {}}
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.keys))
        os.replace(tmp, self.path)
        # custom_auth re-reads on mtime change; make sure two quick writes differ.
        now = time.time()
        os.utime(self.path, (now, now + len(self.keys) * 1e-3))


class ProxyProcess:
    def __init__(self, config: dict[str, Any], workdir: Path, env: dict[str, str],
                 name: str = "proxy", num_workers: int = 1, plugins: bool = True,
                 litellm_bin: Path | None = None) -> None:
        self.config = config
        self.workdir = workdir
        self.name = name
        self.port = free_port()
        self.num_workers = num_workers
        self.plugins = plugins
        # The ``litellm`` CLI to run: this interpreter's by default; another virtual env's to run a
        # different LiteLLM release beside it (benchmarks/bench_matrix.py).
        self.litellm_bin = litellm_bin or Path(sys.executable).with_name("litellm")
        self.config_path = workdir / f"{name}_config.yaml"
        self.log_path = workdir / f"{name}.log"
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.meant_down = False   # stop()/kill() called: an exit is the test's doing, not a crash
        self.was_ready = False    # answered its readiness check at least once
        ProxyProcess.started.append(self)

    started: list[ProxyProcess] = []   # every proxy of this test run (for failure reports)

    def crash_report(self) -> str | None:
        """Why this proxy is not serving when no test stopped it (exit code + log tail), else None."""
        if self.process is None or self.meant_down or not self.was_ready or self.process.poll() is None:
            return None   # never served (e.g. a startup refusal a test asked for), stopped, or running
        return (f"{self.name} (port {self.port}) exited by itself with code {self.process.returncode}; "
                f"log {self.log_path}:\n{self.log_tail(80)}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.endswith("_API_KEY") and k not in ("DATABASE_URL", "CONFIG_FILE_PATH")
               and k not in LITELLM_CLI_ENV}
        env.update({
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
            "PYTHONUNBUFFERED": "1",
            # A crash in a C extension then leaves the Python stacks of every thread in the log.
            "PYTHONFAULTHANDLER": "1",
            # LiteLLM counts tokens of failed requests with a HuggingFace tokenizer for llama-like
            # models and retries its download for ~20 s when offline; use its bundled fallback.
            "HF_HUB_OFFLINE": "1",
            # With --num_workers > 1 uvicorn kills a worker that does not answer its health ping
            # within 5 s; a spawned worker re-imports litellm first (~20 s on a loaded 2-core
            # machine), so every worker "died" in a loop on 1.102.4 and 1.108.7 alike.
            "TIMEOUT_WORKER_HEALTHCHECK": "120",
        })
        if self.plugins:
            env["LITELLM_WORKER_STARTUP_HOOKS"] = STARTUP_HOOK
        env.update(self.env)
        return env

    def start(self, timeout: float = 240.0, wait: bool = True) -> ProxyProcess:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.meant_down = False
        cmd = [str(self.litellm_bin), "--config", str(self.config_path), "--host", "127.0.0.1",
               "--port", str(self.port)]
        if self.num_workers > 1:
            cmd += ["--num_workers", str(self.num_workers)]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(cmd, cwd=ROOT, env=self.process_env(), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 240.0) -> None:
        # A deadline, not a wait: ready proxies return at once. 240 s because a multi-worker proxy
        # spawns workers that each re-import litellm, > 90 s on a 2-core machine shared by others.
        path = "/plugins/ready" if self.plugins else "/health/liveliness"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + path, timeout=2.0).status_code == 200:
                    self.was_ready = True
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.meant_down = True
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group (the proxy and its workers), as a crash would."""
        if self.process is None or self.process.poll() is not None:
            return
        self.meant_down = True
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def client(self, key: str = MASTER_KEY, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def credits_verify(self) -> subprocess.CompletedProcess[str]:
        """``litellm-plugins credits verify`` against this proxy's config and database (exit 0 = every
        balance equals its ledger)."""
        return subprocess.run([sys.executable, "-m", "litellm_plugins.cli", "--config", str(self.config_path),
                               "credits", "verify"], env=self.process_env(), capture_output=True, text=True,
                              timeout=60)
