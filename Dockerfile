# ---- web console build stage (litellm_plugins/console): Node only here, never in the final image ----
# Build tools are exactly package-lock.json's (esbuild, Chart.js); the output is copied as package data.
FROM node:20.20.2-bookworm-slim AS console
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY scripts/build-console.mjs ./scripts/
COPY litellm_plugins/console/src ./litellm_plugins/console/src
RUN node scripts/build-console.mjs
# ---- end of the console build stage ----

# The official LiteLLM proxy image at the default release (constraints.txt), plus litellm-plugins.
# tests/test_core_packaging.py checks that the tag matches that default and that everything copied exists.
FROM ghcr.io/berriai/litellm:v1.108.7

WORKDIR /app/litellm-plugins
COPY pyproject.toml README.md constraints.txt ./
COPY litellm_plugins ./litellm_plugins
COPY --from=console /src/litellm_plugins/console/static ./litellm_plugins/console/static
# litellm[proxy]==1.108.7 is already in the image (-c keeps pip from moving it), so pip only adds
# our package and its small deps.
RUN pip install --no-cache-dir . -c constraints.txt && litellm-plugins --help >/dev/null

COPY proxy_config.yaml /app/proxy_config.yaml

# Our startup hook: validate settings, migrate our own Postgres schema, mount /plugins/* routes.
ENV LITELLM_WORKER_STARTUP_HOOKS=litellm_plugins.core.startup:start \
    CONFIG_FILE_PATH=/app/proxy_config.yaml

EXPOSE 4000
HEALTHCHECK --interval=15s --timeout=5s --start-period=40s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:4000/plugins/ready', timeout=4).status == 200 else 1)"
# The base image's entrypoint runs `litellm`; these are its arguments.
CMD ["--config", "/app/proxy_config.yaml", "--port", "4000"]
