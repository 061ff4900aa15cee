-- Rollups of usage_log for the console's dashboard (usage/store.py dashboard), so an all-accounts month
-- reads a few thousand pre-summed rows instead of a third of a million raw ones:
--   usage_rollup_hour          hour x (requested_model, power_level, model_group, provider, byok, status)
--                              -> the all-accounts charts, totals and breakdowns;
--   usage_rollup_account_hour  the same per account -> one account's charts;
--   usage_rollup_account_day   day x account -> the all-accounts "top accounts" table.
-- A missing text dimension is stored as '' (a primary key column cannot be NULL); readers map it back.
-- Sums are exact (cost_usd NUMERIC, credits BIGINT). latency_hist counts requests per latency bucket:
-- usage_latency_bucket() below, 49 buckets about 25% wide from 5 ms to 179 s (bucket 0: < 5 ms, bucket 48:
-- >= 179366 ms); a p50 read from it is the bucket's geometric middle, within about 12% of the exact one.
--
-- Kept in the same transaction as usage_log by statement-level triggers with transition tables: an
-- insert adds the new rows, an update (the writer's upsert turns a failure into a success) subtracts the
-- old row and adds the new one, a delete subtracts. Each row lands in the hour/day of its own
-- created_at, so a late row (a spool replay with an old timestamp) goes to its own hour. One grouped
-- upsert per rollup per statement (a 500-row batch is three statements, not 1,500), in key order, under
-- a transaction advisory lock so two writers' batches cannot deadlock on the shared rollup rows.
--
-- Backfill: rows already in usage_log are summed below, in this migration's transaction, after the
-- triggers exist and with usage_log locked against writes (SHARE ROW EXCLUSIVE, taken by CREATE
-- TRIGGER anyway), so nothing is counted twice or missed. Cost: three grouped scans of usage_log
-- (about a minute for 1,000,000 rows on the loaded 2-core VM); usage writes wait meanwhile (the writer
-- spools and replays them), reads are not blocked.

CREATE FUNCTION "litellm_plugins"."usage_latency_bucket"(ms INTEGER) RETURNS INTEGER
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT width_bucket(ms, '{5,6,8,10,12,15,19,24,30,37,47,58,73,91,114,142,178,222,278,347,434,542,678,847,1059,1323,1654,2068,2585,3231,4039,5049,6311,7889,9861,12326,15407,19259,24074,30093,37616,47020,58775,73468,91835,114794,143493,179366}'::integer[])
$fn$;

-- latency histogram of a group of rows, each counted with weight w (+1 added, -1 removed)
CREATE FUNCTION "litellm_plugins"."usage_hist_step"(state INTEGER[], ms INTEGER, w INTEGER) RETURNS INTEGER[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    b INTEGER;
BEGIN
    IF ms IS NULL THEN
        RETURN state;
    END IF;
    b := "litellm_plugins"."usage_latency_bucket"(ms) + 1;
    state[b] := state[b] + w;
    RETURN state;
END
$fn$;

CREATE AGGREGATE "litellm_plugins"."usage_hist"(INTEGER, INTEGER) (
    SFUNC = "litellm_plugins"."usage_hist_step", STYPE = INTEGER[], INITCOND = '{0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0}');

CREATE FUNCTION "litellm_plugins"."usage_hist_add"(a INTEGER[], b INTEGER[]) RETURNS INTEGER[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT array_agg(x + y ORDER BY i) FROM unnest(a, b) WITH ORDINALITY AS u(x, y, i)
$fn$;

-- CreateTable
CREATE TABLE "litellm_plugins"."usage_rollup_hour" (
    "hour" TIMESTAMPTZ(6) NOT NULL,
    "requested_model" TEXT NOT NULL,
    "power_level" TEXT NOT NULL,
    "model_group" TEXT NOT NULL,
    "provider" TEXT NOT NULL,
    "byok" BOOLEAN NOT NULL,
    "status" TEXT NOT NULL,
    "requests" BIGINT NOT NULL,
    "succeeded" BIGINT NOT NULL,
    "byok_requests" BIGINT NOT NULL,
    "prompt_tokens" BIGINT NOT NULL,
    "completion_tokens" BIGINT NOT NULL,
    "cost_usd" DECIMAL(30,12) NOT NULL,
    "credits_charged" BIGINT NOT NULL,
    "latency_hist" INTEGER[] NOT NULL,

    CONSTRAINT "usage_rollup_hour_pkey" PRIMARY KEY ("hour", "requested_model", "power_level", "model_group", "provider", "byok", "status")
);

-- CreateTable
CREATE TABLE "litellm_plugins"."usage_rollup_account_hour" (
    "account" TEXT NOT NULL,
    "hour" TIMESTAMPTZ(6) NOT NULL,
    "requested_model" TEXT NOT NULL,
    "power_level" TEXT NOT NULL,
    "model_group" TEXT NOT NULL,
    "provider" TEXT NOT NULL,
    "byok" BOOLEAN NOT NULL,
    "status" TEXT NOT NULL,
    "requests" BIGINT NOT NULL,
    "succeeded" BIGINT NOT NULL,
    "byok_requests" BIGINT NOT NULL,
    "prompt_tokens" BIGINT NOT NULL,
    "completion_tokens" BIGINT NOT NULL,
    "cost_usd" DECIMAL(30,12) NOT NULL,
    "credits_charged" BIGINT NOT NULL,
    "latency_hist" INTEGER[] NOT NULL,

    CONSTRAINT "usage_rollup_account_hour_pkey" PRIMARY KEY ("account", "hour", "requested_model", "power_level", "model_group", "provider", "byok", "status")
);

-- CreateTable
CREATE TABLE "litellm_plugins"."usage_rollup_account_day" (
    "day" TIMESTAMPTZ(6) NOT NULL,
    "account" TEXT NOT NULL,
    "requests" BIGINT NOT NULL,
    "succeeded" BIGINT NOT NULL,
    "byok_requests" BIGINT NOT NULL,
    "prompt_tokens" BIGINT NOT NULL,
    "completion_tokens" BIGINT NOT NULL,
    "cost_usd" DECIMAL(30,12) NOT NULL,
    "credits_charged" BIGINT NOT NULL,
    "latency_hist" INTEGER[] NOT NULL,

    CONSTRAINT "usage_rollup_account_day_pkey" PRIMARY KEY ("day", "account")
);

CREATE FUNCTION "litellm_plugins"."usage_rollup_after_insert"() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
        RETURN NULL;
    END IF;
    -- one rollup writer at a time (until commit): batches touching the same rows cannot deadlock
    PERFORM pg_advisory_xact_lock(hashtext('litellm_plugins.usage_rollup'));
    INSERT INTO "litellm_plugins"."usage_rollup_hour" AS r (hour, requested_model, power_level, model_group, provider, byok, status, requests, succeeded, byok_requests, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_hist)
        SELECT date_trunc('hour', created_at, 'UTC'), COALESCE(requested_model, ''), COALESCE(power_level, ''), COALESCE(model_group, ''), COALESCE(provider, ''), byok, status, sum(w), sum(CASE WHEN status = 'success' THEN w ELSE 0 END), sum(CASE WHEN byok THEN w ELSE 0 END), sum(w * prompt_tokens), sum(w * completion_tokens), sum(w * cost_usd), sum(w * credits_charged), "litellm_plugins"."usage_hist"(latency_ms, w)
        FROM (SELECT account, requested_model, power_level, model_group, provider, byok, status, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, created_at, 1 AS w FROM new_rows) AS s
        GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7
        ON CONFLICT (hour, requested_model, power_level, model_group, provider, byok, status) DO UPDATE SET
            requests = r.requests + EXCLUDED.requests,
            succeeded = r.succeeded + EXCLUDED.succeeded,
            byok_requests = r.byok_requests + EXCLUDED.byok_requests,
            prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
            cost_usd = r.cost_usd + EXCLUDED.cost_usd,
            credits_charged = r.credits_charged + EXCLUDED.credits_charged,
            latency_hist = "litellm_plugins"."usage_hist_add"(r.latency_hist, EXCLUDED.latency_hist);
    INSERT INTO "litellm_plugins"."usage_rollup_account_hour" AS r (account, hour, requested_model, power_level, model_group, provider, byok, status, requests, succeeded, byok_requests, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_hist)
        SELECT COALESCE(account, ''), date_trunc('hour', created_at, 'UTC'), COALESCE(requested_model, ''), COALESCE(power_level, ''), COALESCE(model_group, ''), COALESCE(provider, ''), byok, status, sum(w), sum(CASE WHEN status = 'success' THEN w ELSE 0 END), sum(CASE WHEN byok THEN w ELSE 0 END), sum(w * prompt_tokens), sum(w * completion_tokens), sum(w * cost_usd), sum(w * credits_charged), "litellm_plugins"."usage_hist"(latency_ms, w)
        FROM (SELECT account, requested_model, power_level, model_group, provider, byok, status, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, created_at, 1 AS w FROM new_rows) AS s
        GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
        ON CONFLICT (account, hour, requested_model, power_level, model_group, provider, byok, status) DO UPDATE SET
            requests = r.requests + EXCLUDED.requests,
            succeeded = r.succeeded + EXCLUDED.succeeded,
            byok_requests = r.byok_requests + EXCLUDED.byok_requests,
            prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
            cost_usd = r.cost_usd + EXCLUDED.cost_usd,
            credits_charged = r.credits_charged + EXCLUDED.credits_charged,
            latency_hist = "litellm_plugins"."usage_hist_add"(r.latency_hist, EXCLUDED.latency_hist);
    INSERT INTO "litellm_plugins"."usage_rollup_account_day" AS r (day, account, requests, succeeded, byok_requests, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_hist)
        SELECT date_trunc('day', created_at, 'UTC'), COALESCE(account, ''), sum(w), sum(CASE WHEN status = 'success' THEN w ELSE 0 END), sum(CASE WHEN byok THEN w ELSE 0 END), sum(w * prompt_tokens), sum(w * completion_tokens), sum(w * cost_usd), sum(w * credits_charged), "litellm_plugins"."usage_hist"(latency_ms, w)
        FROM (SELECT account, requested_model, power_level, model_group, provider, byok, status, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, created_at, 1 AS w FROM new_rows) AS s
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (day, account) DO UPDATE SET
            requests = r.requests + EXCLUDED.requests,
            succeeded = r.succeeded + EXCLUDED.succeeded,
            byok_requests = r.byok_requests + EXCLUDED.byok_requests,
            prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
            cost_usd = r.cost_usd + EXCLUDED.cost_usd,
            credits_charged = r.credits_charged + EXCLUDED.credits_charged,
            latency_hist = "litellm_plugins"."usage_hist_add"(r.latency_hist, EXCLUDED.latency_hist);
    RETURN NULL;
END
$fn$;

CREATE FUNCTION "litellm_plugins"."usage_rollup_after_update"() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
        RETURN NULL;
    END IF;
    -- one rollup writer at a time (until commit): batches touching the same rows cannot deadlock
    PERFORM pg_advisory_xact_lock(hashtext('litellm_plugins.usage_rollup'));
    INSERT INTO "litellm_plugins"."usage_rollup_hour" AS r (hour, requested_model, power_level, model_group, provider, byok, status, requests, succeeded, byok_requests, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_hist)
        SELECT date_trunc('hour', created_at, 'UTC'), COALESCE(requested_model, ''), COALESCE(power_level, ''), COALESCE(model_group, ''), COALESCE(provider, ''), byok, status, sum(w), sum(CASE WHEN status = 'success' THEN w ELSE 0 END), sum(CASE WHEN byok THEN w ELSE 0 END), sum(w * prompt_tokens), sum(w * completion_tokens), sum(w * cost_usd), sum(w * credits_charged), "litellm_plugins"."usage_hist"(latency_ms, w)
        FROM (SELECT account, requested_model, power_level, model_group, provider, byok, status, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, created_at, 1 AS w FROM new_rows UNION ALL SELECT account, requested_model, power_level, model_group, provider, byok, status, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, created_at, -1 AS w FROM old_rows) AS s
        GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7
        ON CONFLICT (hour, requested_model, power_level, model_group, provider, byok, status) DO UPDATE SET
            requests = r.requests + EXCLUDED.requests,
            succeeded = r.succeeded + EXCLUDED.succeeded,
            byok_requests = r.byok_requests + EXCLUDED.byok_requests,
            prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
            cost_usd = r.cost_usd + EXCLUDED.cost_usd,
            credits_charged = r.credits_charged + EXCLUDED.credits_charged,
            latency_hist = "litellm_plugins"."usage_hist_add"(r.latency_hist, EXCLUDED.latency_hist);
    INSERT INTO "litellm_plugins"."usage_rollup_account_hour" AS r (account, hour, requested_model, power_level, model_group, provider, byok, status, requests, succeeded, byok_requests, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_hist)
        SELECT COALESCE(account, ''), date_trunc('hour', created_at, 'UTC'), COALESCE(requested_model, ''), COALESCE(power_level, ''), COALESCE(model_group, ''), COALESCE(provider, ''), byok, status, sum(w), sum(CASE WHEN status = 'success' THEN w ELSE 0 END), sum(CASE WHEN byok THEN w ELSE 0 END), sum(w * prompt_tokens), sum(w * completion_tokens), sum(w * cost_usd), sum(w * credits_charged), "litellm_plugins"."usage_hist"(latency_ms, w)
        FROM (SELECT account, requested_model, power_level, model_group, provider, byok, status, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, created_at, 1 AS w FROM new_rows UNION ALL SELECT account, requested_model, power_level, model_group, provider, byok, status, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, created_at, -1 AS w FROM old_rows) AS s
        GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
        ON CONFLICT (account, hour, requested_model, power_level, model_group, provider, byok, status) DO UPDATE SET
            requests = r.requests + EXCLUDED.requests,
            succeeded = r.succeeded + EXCLUDED.succeeded,
            byok_requests = r.byok_requests + EXCLUDED.byok_requests,
            prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
            cost_usd = r.cost_usd + EXCLUDED.cost_usd,
            credits_charged = r.credits_charged + EXCLUDED.credits_charged,
            latency_hist = "litellm_plugins"."usage_hist_add"(r.latency_hist, EXCLUDED.latency_hist);
    INSERT INTO "litellm_plugins"."usage_rollup_account_day" AS r (day, account, requests, succeeded, byok_requests, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_hist)
        SELECT date_trunc('day', created_at, 'UTC'), COALESCE(account, ''), sum(w), sum(CASE WHEN status = 'success' THEN w ELSE 0 END), sum(CASE WHEN byok THEN w ELSE 0 END), sum(w * prompt_tokens), sum(w * completion_tokens), sum(w * cost_usd), sum(w * credits_charged), "litellm_plugins"."usage_hist"(latency_ms, w)
        FROM (SELECT account, requested_model, power_level, model_group, provider, byok, status, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, created_at, 1 AS w FROM new_rows UNION ALL SELECT account, requested_model, power_level, model_group, provider, byok, status, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, created_at, -1 AS w FROM old_rows) AS s
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (day, account) DO UPDATE SET
            requests = r.requests + EXCLUDED.requests,
            succeeded = r.succeeded + EXCLUDED.succeeded,
            byok_requests = r.byok_requests + EXCLUDED.byok_requests,
            prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
            cost_usd = r.cost_usd + EXCLUDED.cost_usd,
            credits_charged = r.credits_charged + EXCLUDED.credits_charged,
            latency_hist = "litellm_plugins"."usage_hist_add"(r.latency_hist, EXCLUDED.latency_hist);
    RETURN NULL;
END
$fn$;

CREATE FUNCTION "litellm_plugins"."usage_rollup_after_delete"() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM old_rows) THEN
        RETURN NULL;
    END IF;
    -- one rollup writer at a time (until commit): batches touching the same rows cannot deadlock
    PERFORM pg_advisory_xact_lock(hashtext('litellm_plugins.usage_rollup'));
    INSERT INTO "litellm_plugins"."usage_rollup_hour" AS r (hour, requested_model, power_level, model_group, provider, byok, status, requests, succeeded, byok_requests, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_hist)
        SELECT date_trunc('hour', created_at, 'UTC'), COALESCE(requested_model, ''), COALESCE(power_level, ''), COALESCE(model_group, ''), COALESCE(provider, ''), byok, status, sum(w), sum(CASE WHEN status = 'success' THEN w ELSE 0 END), sum(CASE WHEN byok THEN w ELSE 0 END), sum(w * prompt_tokens), sum(w * completion_tokens), sum(w * cost_usd), sum(w * credits_charged), "litellm_plugins"."usage_hist"(latency_ms, w)
        FROM (SELECT account, requested_model, power_level, model_group, provider, byok, status, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, created_at, -1 AS w FROM old_rows) AS s
        GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7
        ON CONFLICT (hour, requested_model, power_level, model_group, provider, byok, status) DO UPDATE SET
            requests = r.requests + EXCLUDED.requests,
            succeeded = r.succeeded + EXCLUDED.succeeded,
            byok_requests = r.byok_requests + EXCLUDED.byok_requests,
            prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
            cost_usd = r.cost_usd + EXCLUDED.cost_usd,
            credits_charged = r.credits_charged + EXCLUDED.credits_charged,
            latency_hist = "litellm_plugins"."usage_hist_add"(r.latency_hist, EXCLUDED.latency_hist);
    INSERT INTO "litellm_plugins"."usage_rollup_account_hour" AS r (account, hour, requested_model, power_level, model_group, provider, byok, status, requests, succeeded, byok_requests, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_hist)
        SELECT COALESCE(account, ''), date_trunc('hour', created_at, 'UTC'), COALESCE(requested_model, ''), COALESCE(power_level, ''), COALESCE(model_group, ''), COALESCE(provider, ''), byok, status, sum(w), sum(CASE WHEN status = 'success' THEN w ELSE 0 END), sum(CASE WHEN byok THEN w ELSE 0 END), sum(w * prompt_tokens), sum(w * completion_tokens), sum(w * cost_usd), sum(w * credits_charged), "litellm_plugins"."usage_hist"(latency_ms, w)
        FROM (SELECT account, requested_model, power_level, model_group, provider, byok, status, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, created_at, -1 AS w FROM old_rows) AS s
        GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
        ON CONFLICT (account, hour, requested_model, power_level, model_group, provider, byok, status) DO UPDATE SET
            requests = r.requests + EXCLUDED.requests,
            succeeded = r.succeeded + EXCLUDED.succeeded,
            byok_requests = r.byok_requests + EXCLUDED.byok_requests,
            prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
            cost_usd = r.cost_usd + EXCLUDED.cost_usd,
            credits_charged = r.credits_charged + EXCLUDED.credits_charged,
            latency_hist = "litellm_plugins"."usage_hist_add"(r.latency_hist, EXCLUDED.latency_hist);
    INSERT INTO "litellm_plugins"."usage_rollup_account_day" AS r (day, account, requests, succeeded, byok_requests, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_hist)
        SELECT date_trunc('day', created_at, 'UTC'), COALESCE(account, ''), sum(w), sum(CASE WHEN status = 'success' THEN w ELSE 0 END), sum(CASE WHEN byok THEN w ELSE 0 END), sum(w * prompt_tokens), sum(w * completion_tokens), sum(w * cost_usd), sum(w * credits_charged), "litellm_plugins"."usage_hist"(latency_ms, w)
        FROM (SELECT account, requested_model, power_level, model_group, provider, byok, status, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, created_at, -1 AS w FROM old_rows) AS s
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (day, account) DO UPDATE SET
            requests = r.requests + EXCLUDED.requests,
            succeeded = r.succeeded + EXCLUDED.succeeded,
            byok_requests = r.byok_requests + EXCLUDED.byok_requests,
            prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
            cost_usd = r.cost_usd + EXCLUDED.cost_usd,
            credits_charged = r.credits_charged + EXCLUDED.credits_charged,
            latency_hist = "litellm_plugins"."usage_hist_add"(r.latency_hist, EXCLUDED.latency_hist);
    RETURN NULL;
END
$fn$;

CREATE TRIGGER "usage_rollup_after_insert" AFTER INSERT ON "litellm_plugins"."usage_log"
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION "litellm_plugins"."usage_rollup_after_insert"();

CREATE TRIGGER "usage_rollup_after_update" AFTER UPDATE ON "litellm_plugins"."usage_log"
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION "litellm_plugins"."usage_rollup_after_update"();

CREATE TRIGGER "usage_rollup_after_delete" AFTER DELETE ON "litellm_plugins"."usage_log"
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION "litellm_plugins"."usage_rollup_after_delete"();

-- Backfill (see the header for its cost).
LOCK TABLE "litellm_plugins"."usage_log" IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO "litellm_plugins"."usage_rollup_hour" AS r (hour, requested_model, power_level, model_group, provider, byok, status, requests, succeeded, byok_requests, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_hist)
SELECT date_trunc('hour', created_at, 'UTC'), COALESCE(requested_model, ''), COALESCE(power_level, ''), COALESCE(model_group, ''), COALESCE(provider, ''), byok, status, sum(w), sum(CASE WHEN status = 'success' THEN w ELSE 0 END), sum(CASE WHEN byok THEN w ELSE 0 END), sum(w * prompt_tokens), sum(w * completion_tokens), sum(w * cost_usd), sum(w * credits_charged), "litellm_plugins"."usage_hist"(latency_ms, w)
FROM (SELECT account, requested_model, power_level, model_group, provider, byok, status, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, created_at, 1 AS w FROM "litellm_plugins"."usage_log") AS s
GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7
ON CONFLICT (hour, requested_model, power_level, model_group, provider, byok, status) DO UPDATE SET
    requests = r.requests + EXCLUDED.requests,
    succeeded = r.succeeded + EXCLUDED.succeeded,
    byok_requests = r.byok_requests + EXCLUDED.byok_requests,
    prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
    cost_usd = r.cost_usd + EXCLUDED.cost_usd,
    credits_charged = r.credits_charged + EXCLUDED.credits_charged,
    latency_hist = "litellm_plugins"."usage_hist_add"(r.latency_hist, EXCLUDED.latency_hist);

INSERT INTO "litellm_plugins"."usage_rollup_account_hour" AS r (account, hour, requested_model, power_level, model_group, provider, byok, status, requests, succeeded, byok_requests, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_hist)
SELECT COALESCE(account, ''), date_trunc('hour', created_at, 'UTC'), COALESCE(requested_model, ''), COALESCE(power_level, ''), COALESCE(model_group, ''), COALESCE(provider, ''), byok, status, sum(w), sum(CASE WHEN status = 'success' THEN w ELSE 0 END), sum(CASE WHEN byok THEN w ELSE 0 END), sum(w * prompt_tokens), sum(w * completion_tokens), sum(w * cost_usd), sum(w * credits_charged), "litellm_plugins"."usage_hist"(latency_ms, w)
FROM (SELECT account, requested_model, power_level, model_group, provider, byok, status, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, created_at, 1 AS w FROM "litellm_plugins"."usage_log") AS s
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
ON CONFLICT (account, hour, requested_model, power_level, model_group, provider, byok, status) DO UPDATE SET
    requests = r.requests + EXCLUDED.requests,
    succeeded = r.succeeded + EXCLUDED.succeeded,
    byok_requests = r.byok_requests + EXCLUDED.byok_requests,
    prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
    cost_usd = r.cost_usd + EXCLUDED.cost_usd,
    credits_charged = r.credits_charged + EXCLUDED.credits_charged,
    latency_hist = "litellm_plugins"."usage_hist_add"(r.latency_hist, EXCLUDED.latency_hist);

INSERT INTO "litellm_plugins"."usage_rollup_account_day" AS r (day, account, requests, succeeded, byok_requests, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_hist)
SELECT date_trunc('day', created_at, 'UTC'), COALESCE(account, ''), sum(w), sum(CASE WHEN status = 'success' THEN w ELSE 0 END), sum(CASE WHEN byok THEN w ELSE 0 END), sum(w * prompt_tokens), sum(w * completion_tokens), sum(w * cost_usd), sum(w * credits_charged), "litellm_plugins"."usage_hist"(latency_ms, w)
FROM (SELECT account, requested_model, power_level, model_group, provider, byok, status, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, created_at, 1 AS w FROM "litellm_plugins"."usage_log") AS s
GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (day, account) DO UPDATE SET
    requests = r.requests + EXCLUDED.requests,
    succeeded = r.succeeded + EXCLUDED.succeeded,
    byok_requests = r.byok_requests + EXCLUDED.byok_requests,
    prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
    cost_usd = r.cost_usd + EXCLUDED.cost_usd,
    credits_charged = r.credits_charged + EXCLUDED.credits_charged,
    latency_hist = "litellm_plugins"."usage_hist_add"(r.latency_hist, EXCLUDED.latency_hist);

