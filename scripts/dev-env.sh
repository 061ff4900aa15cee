# Sourced by scripts/serve and scripts/test: make this machine ready to run the proxy and the tests.
# Starts local Postgres/Redis when they are not running, builds the virtual env from pyproject.toml
# and constraints.txt (again only when one of them changed), installs the pinned `prisma` CLI used by
# `prisma validate`, and exports development defaults (each one overridable from the environment).
#
# LiteLLM release: by default the newest tested one (constraints.txt) in .venv. LITELLM_VERSION=X
# (any release of pyproject.toml's range, e.g. the lowest, 1.102.4) builds and uses
# .venv-litellm-X instead, so both ends of the range can be tested side by side (.ci/run does).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[dev-env] %s\n' "$*" >&2; }

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
  pg_isready -h 127.0.0.1 -p 5432 || { log "PostgreSQL did not start"; exit 1; }
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.2; done
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { log "Redis did not start"; exit 1; }
fi

default_litellm="$(sed -n 's/^litellm==//p' constraints.txt)"
export LITELLM_VERSION="${LITELLM_VERSION:-$default_litellm}"
if [ "$LITELLM_VERSION" = "$default_litellm" ]; then
  VENV=.venv; litellm_pin=(-c constraints.txt)
else
  VENV=".venv-litellm-$LITELLM_VERSION"; litellm_pin=("litellm[proxy]==$LITELLM_VERSION")
fi
stamp="$VENV/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)-$LITELLM_VERSION"
if [ ! -f "$stamp" ]; then
  log "installing Python dependencies into $VENV (litellm $LITELLM_VERSION)"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check -e '.[test]' "${litellm_pin[@]}" > "$VENV/install.log" 2>&1; then
    grep -v "is ignored" "$VENV/install.log" | tail -n 30 >&2; log "pip install failed (full log: $VENV/install.log)"; exit 1
  fi
  rm -f "$VENV"/.installed-*; touch "$stamp"
fi
if command -v npm >/dev/null 2>&1 && [ ! -x node_modules/.bin/prisma ]; then
  log "installing the prisma CLI (schema validation only)"
  npm install --no-audit --no-fund --loglevel=error >/dev/null || log "npm install failed: prisma validate will be skipped"
fi

# ---- web console (litellm_plugins/console) ------------------------------------------------------
# Bundle src/ with the pinned esbuild + Chart.js from package-lock.json into console/static/ (git-ignored,
# package data), again only when the sources or the lock file changed. Without npm the console answers 503.
if command -v npm >/dev/null 2>&1; then
  if [ ! -x node_modules/.bin/esbuild ] || [ ! -d node_modules/chart.js ]; then
    log "installing the console's build tools (package-lock.json)"
    npm install --no-audit --no-fund --loglevel=error >/dev/null || log "npm install failed: the console will not be built"
  fi
  console_stamp="litellm_plugins/console/static/.source-$(cat package-lock.json scripts/build-console.mjs litellm_plugins/console/src/* | sha256sum | cut -c1-16)"
  if [ -x node_modules/.bin/esbuild ] && [ ! -f "$console_stamp" ]; then
    log "building the web console"
    node scripts/build-console.mjs >/dev/null && touch "$console_stamp" || log "console build failed: /plugins/ui/ will answer 503"
  fi
else
  log "npm not found: the web console is not built (/plugins/ui/ answers 503)"
fi
# The console's browser tests drive Debian's chromium (Playwright's own download needs the internet).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  log "installing chromium for the console's browser tests"
  { apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; }; } \
    || log "chromium could not be installed: the console's browser tests will be skipped"
fi
# ---- end of the web console block ----

# BYOK needs a Fernet key that survives restarts (a temporary key would make every stored key
# unreadable after the next restart). Generate one development key once, keep it out of git.
if [ -z "${LITELLM_PLUGINS_BYOK_ENCRYPTION_KEYS:-}" ]; then
  mkdir -p .local
  if [ ! -s .local/byok.key ]; then
    log "generating a persistent development BYOK key in .local/byok.key"
    (umask 077; "$VENV/bin/python" -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())' > .local/byok.key)
  fi
  export LITELLM_PLUGINS_BYOK_ENCRYPTION_KEYS="$(cat .local/byok.key)"
fi

export PATH="$ROOT/$VENV/bin:$PATH"
export LITELLM_LOCAL_MODEL_COST_MAP="${LITELLM_LOCAL_MODEL_COST_MAP:-True}"
# Offline machines: LiteLLM would retry a HuggingFace tokenizer download (~20 s) on failed calls.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export LITELLM_WORKER_STARTUP_HOOKS="${LITELLM_WORKER_STARTUP_HOOKS:-litellm_plugins.core.startup:start}"
export LITELLM_MASTER_KEY="${LITELLM_MASTER_KEY:-sk-local-master-key}"
export LITELLM_PLUGINS_DATABASE_URL="${LITELLM_PLUGINS_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/litellm_plugins}"
export LITELLM_PLUGINS_REDIS_URL="${LITELLM_PLUGINS_REDIS_URL:-redis://127.0.0.1:6379/0}"
