"""Static checks of what cannot run here (no Docker engine) and of the project's own promises:
the pin, the Dockerfile and docker-compose.yml, the README's quick start and .ci/run."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pinned_litellm() -> str:
    """The default LiteLLM release (constraints.txt): what the quick start and the image install."""
    pins = re.findall(r"^litellm==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert len(pins) == 1, pins
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins[0]) and not pins[0].startswith("1.107."), pins[0]
    return pins[0]


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_dependency_is_pinned() -> None:
    """Exact pins, except LiteLLM: a declared range (tests/test_core_versions.py) whose default
    release constraints.txt pins exactly."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"] + project["optional-dependencies"]["test"]:
        if re.match(r"litellm\b", dep):
            continue
        assert "==" in dep, f"unpinned dependency: {dep}"
    assert pinned_litellm()


def test_dockerfile_uses_the_pinned_official_image_and_copies_what_exists() -> None:
    instructions = dockerfile_instructions()
    # the last stage is the image that ships (earlier ones only build the console's assets)
    final_from = [args for op, args in instructions if op == "FROM"][-1]
    assert final_from == f"ghcr.io/berriai/litellm:v{pinned_litellm()}"
    # the image's own LiteLLM stays: our install is constrained to the same default release
    assert any(op == "RUN" and re.search(r"pip install .* -c constraints\.txt", args) for op, args in instructions)
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()}
    copied_to: dict[str, str] = {}
    for op, args in instructions:
        if op == "COPY":
            *sources, dest = shlex.split(args)
            if sources and sources[0].startswith("--from="):
                continue  # from a build stage, not from the repository
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
                assert source not in ignored, f"{source} is excluded by .dockerignore"
                copied_to[source] = dest
    env = " ".join(args for op, args in instructions if op == "ENV")
    cmd = next(args for op, args in instructions if op == "CMD")
    config_path = yaml.safe_load(cmd)[yaml.safe_load(cmd).index("--config") + 1]
    assert copied_to["proxy_config.yaml"] == config_path
    assert f"CONFIG_FILE_PATH={config_path}" in env
    hook = re.search(r"LITELLM_WORKER_STARTUP_HOOKS=(\S+)", env).group(1)
    module, fn = hook.split(":")
    assert callable(getattr(importlib.import_module(module), fn))


def test_compose_runs_postgres_redis_and_the_proxy_with_everything_the_config_needs() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "proxy"} <= set(services)
    proxy = services["proxy"]
    assert (ROOT / proxy["build"] / "Dockerfile").exists()
    config_path = yaml.safe_load(next(a for op, a in dockerfile_instructions() if op == "CMD"))[1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in proxy["volumes"]}
    assert config_path in mounts and (ROOT / mounts[config_path]).exists()
    named = set(compose.get("volumes") or {})
    for volume in proxy["volumes"]:
        source = volume.split(":")[0]
        assert source in named or (ROOT / source).exists(), f"volume source {source} does not exist"
    # the credits spool (rows kept while Postgres is down) must be on a volume, not the container layer
    spool_dir = yaml.safe_load((ROOT / "proxy_config.yaml").read_text())["litellm_plugins"]["credits"]["spool_dir"]
    assert spool_dir in mounts, f"credits.spool_dir {spool_dir} is not on a volume in docker-compose.yml"
    assert set(proxy["depends_on"]) == {"postgres", "redis"}
    # every os.environ/NAME the plugin section needs is provided to the container
    section = yaml.safe_load((ROOT / "proxy_config.yaml").read_text())["litellm_plugins"]
    needed = set(re.findall(r"os\.environ/(\w+)", yaml.safe_dump(section)))
    assert needed <= set(proxy["environment"]), needed - set(proxy["environment"])
    assert "LITELLM_MASTER_KEY" in proxy["environment"]
    assert "redis:6379" in proxy["environment"]["LITELLM_PLUGINS_REDIS_URL"]
    assert "@postgres:5432" in proxy["environment"]["LITELLM_PLUGINS_DATABASE_URL"]


def test_readme_quick_start_and_ci_run_the_same_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(scripts/\S+.*)$", quick_start, re.M)
    assert commands[:2] == ["scripts/serve", "scripts/test"], commands
    for command in commands[:2]:
        assert (ROOT / command.split()[0]).exists()
    # .ci/run: the same command, on the default release (whole suite) and on the lowest (e2e)
    ci = (ROOT / ".ci" / "run").read_text()
    runs = re.findall(r"^(.*)\bbash scripts/test\b(.*)$", ci, re.M)
    assert runs == [('LITELLM_VERSION="$lowest" ', ' -q -m e2e -p no:cacheprovider > "$low_log" 2>&1 &'),
                    ("", " -q || newest=$?")], runs
    assert 'wait "$low_pid" || low=$?' in ci
    assert re.search(r"^\[ \"\$newest\" -eq 0 \] && \[ \"\$low\" -eq 0 \]$", ci, re.M)


def test_litellm_otel_plumbing_imports() -> None:
    """docs/litellm.md fact 33: LiteLLM's auth imports its OTel plumbing inside the function, on every
    request. The import must succeed (then it is cached): a failing one is retried per request
    (~1.5 ms each) and a proxy of the fault suite segfaulted inside it."""
    code = textwrap.dedent("""
        import ast, importlib, inspect, textwrap
        from litellm.proxy.auth import user_api_key_auth as auth
        source = textwrap.dedent(inspect.getsource(auth._seed_request_destinations))
        modules = [n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)]
        for name in modules:
            importlib.import_module(name)
        print("imported", len(modules))
    """)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^imported [1-9]", result.stdout, re.M), result.stdout
