-- Rollups of usage_log for the console's dashboard (usage/store.py dashboard), so an all-accounts month
-- reads a few hundred pre-summed rows instead of a third of a million raw ones:
--   usage_rollup_hour          hour x (requested_model, power_level, model_group, provider, byok, status)
--                              -> the all-accounts charts in hour buckets and the partial days of a range;
--   usage_rollup_day           the same per UTC day -> the all-accounts charts, totals and breakdowns;
--   usage_rollup_account_hour  hour x account x dimensions -> one account's charts;
--   usage_rollup_account_day   day x account -> the all-accounts "top accounts" table.
-- A missing text dimension is stored as '' (a primary key column cannot be NULL); readers map it back.
-- Sums are exact (cost_usd NUMERIC, credits BIGINT). latency_hist counts requests per latency bucket:
-- usage_latency_bucket() below, 49 buckets about 25% wide from 5 ms to 179 s (bucket 0: < 5 ms, bucket 48:
-- >= 179366 ms); a p50 read from it is the bucket's geometric middle, within about 12% of the exact one.
--
-- Kept in the same transaction as usage_log by statement-level triggers with transition tables: an
-- insert adds the new rows, an update (the writer's upsert turns a failure into a success) subtracts the
-- old row and adds the new one, a delete subtracts. Each row lands in the hour/day of its own
-- created_at, so a late row (a spool replay with an old timestamp) goes to its own hour. One statement
-- per usage_log statement (usage_rollup_sql(): one grouped upsert per rollup, a 500-row batch is one
-- statement, not 2,000), in key order, under a transaction advisory lock so two writers' batches cannot
-- deadlock on the shared rollup rows.
--
-- Backfill: rows already in usage_log are summed below, in this migration's transaction, after the
-- triggers exist and with usage_log locked against writes (SHARE ROW EXCLUSIVE, taken by CREATE
-- TRIGGER anyway), so nothing is counted twice or missed. Cost: one scan of usage_log grouped four ways
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

-- element-wise sum of two histograms: one plain expression (no unnest/array_agg subquery), so the
-- upsert of an existing rollup row costs ~7 us instead of ~60 us
CREATE FUNCTION "litellm_plugins"."usage_hist_add"(a INTEGER[], b INTEGER[]) RETURNS INTEGER[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT ARRAY[a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5], a[6] + b[6], a[7] + b[7], a[8] + b[8], a[9] + b[9], a[10] + b[10], a[11] + b[11], a[12] + b[12], a[13] + b[13], a[14] + b[14], a[15] + b[15], a[16] + b[16], a[17] + b[17], a[18] + b[18], a[19] + b[19], a[20] + b[20], a[21] + b[21], a[22] + b[22], a[23] + b[23], a[24] + b[24], a[25] + b[25], a[26] + b[26], a[27] + b[27], a[28] + b[28], a[29] + b[29], a[30] + b[30], a[31] + b[31], a[32] + b[32], a[33] + b[33], a[34] + b[34], a[35] + b[35], a[36] + b[36], a[37] + b[37], a[38] + b[38], a[39] + b[39], a[40] + b[40], a[41] + b[41], a[42] + b[42], a[43] + b[43], a[44] + b[44], a[45] + b[45], a[46] + b[46], a[47] + b[47], a[48] + b[48], a[49] + b[49]]
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
CREATE TABLE "litellm_plugins"."usage_rollup_day" (
    "day" TIMESTAMPTZ(6) NOT NULL,
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

    CONSTRAINT "usage_rollup_day_pkey" PRIMARY KEY ("day", "requested_model", "power_level", "model_group", "provider", "byok", "status")
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

-- CreateIndex (the top-accounts table reads its ten winners' days by account)
CREATE INDEX "usage_rollup_account_day_account_day_idx" ON "litellm_plugins"."usage_rollup_account_day"("account", "day");

-- The one statement that adds a delta of usage_log rows to every rollup. ``src`` is a query of usage_log's
-- columns plus w (+1: a row added, -1: a row removed); each rollup gets one grouped upsert of it, in key
-- order. The rollups differ only in their keys, listed once below; the measures are written once.
CREATE FUNCTION "litellm_plugins"."usage_rollup_sql"(src TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    dims CONSTANT TEXT := 'requested_model, power_level, model_group, provider, byok, status';
    dim_exprs CONSTANT TEXT := $$COALESCE(requested_model, ''), COALESCE(power_level, ''), COALESCE(model_group, ''), COALESCE(provider, ''), byok, status$$;
    hour_expr CONSTANT TEXT := $$date_trunc('hour', created_at, 'UTC')$$;
    day_expr CONSTANT TEXT := $$date_trunc('day', created_at, 'UTC')$$;
    account_expr CONSTANT TEXT := $$COALESCE(account, '')$$;
    stmt TEXT := 'WITH s AS (' || src || ')';
    t RECORD;
    ords TEXT;
BEGIN
    FOR t IN SELECT * FROM (VALUES
            (1, 'usage_rollup_hour', 'hour, ' || dims, hour_expr || ', ' || dim_exprs),
            (2, 'usage_rollup_day', 'day, ' || dims, day_expr || ', ' || dim_exprs),
            (3, 'usage_rollup_account_hour', 'account, hour, ' || dims, account_expr || ', ' || hour_expr || ', ' || dim_exprs),
            (4, 'usage_rollup_account_day', 'day, account', day_expr || ', ' || account_expr)
        ) AS v(n, name, keys, exprs) ORDER BY n
    LOOP
        SELECT string_agg(i::text, ', ') INTO ords
        FROM generate_series(1, cardinality(string_to_array(t.keys, ','))) AS i;
        stmt := stmt || format($q$, u%s AS (INSERT INTO "litellm_plugins".%I AS r (%s, requests, succeeded, byok_requests, prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_hist)
    SELECT %s, sum(w), sum(CASE WHEN status = 'success' THEN w ELSE 0 END), sum(CASE WHEN byok THEN w ELSE 0 END), sum(w * prompt_tokens), sum(w * completion_tokens), sum(w * cost_usd), sum(w * credits_charged), "litellm_plugins"."usage_hist"(latency_ms, w)
    FROM s GROUP BY %s ORDER BY %s
    ON CONFLICT (%s) DO UPDATE SET
        requests = r.requests + EXCLUDED.requests,
        succeeded = r.succeeded + EXCLUDED.succeeded,
        byok_requests = r.byok_requests + EXCLUDED.byok_requests,
        prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
        cost_usd = r.cost_usd + EXCLUDED.cost_usd,
        credits_charged = r.credits_charged + EXCLUDED.credits_charged,
        latency_hist = "litellm_plugins"."usage_hist_add"(r.latency_hist, EXCLUDED.latency_hist))$q$,
            t.n, t.name, t.keys, t.exprs, ords, ords, t.keys);
    END LOOP;
    RETURN stmt || ' SELECT 1';
END
$fn$;

-- One statement-level trigger function for insert, update (the writer's upsert turning a failure into a
-- success: the old row out, the new one in) and delete. Transition tables are visible to EXECUTE here.
CREATE FUNCTION "litellm_plugins"."usage_rollup_apply"() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    src CONSTANT TEXT := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT *, 1 AS w FROM new_rows'
        WHEN 'DELETE' THEN 'SELECT *, -1 AS w FROM old_rows'
        ELSE 'SELECT *, 1 AS w FROM new_rows UNION ALL SELECT *, -1 AS w FROM old_rows' END;
    any_rows BOOLEAN;
BEGIN
    -- an upsert whose conflicts all failed its WHERE still fires the UPDATE trigger, with no rows
    EXECUTE 'SELECT EXISTS (' || src || ')' INTO any_rows;
    IF NOT any_rows THEN
        RETURN NULL;
    END IF;
    -- one rollup writer at a time (until commit): batches touching the same rows cannot deadlock
    PERFORM pg_advisory_xact_lock(hashtext('litellm_plugins.usage_rollup'));
    EXECUTE "litellm_plugins"."usage_rollup_sql"(src);
    RETURN NULL;
END
$fn$;

CREATE TRIGGER "usage_rollup_after_insert" AFTER INSERT ON "litellm_plugins"."usage_log"
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION "litellm_plugins"."usage_rollup_apply"();

CREATE TRIGGER "usage_rollup_after_update" AFTER UPDATE ON "litellm_plugins"."usage_log"
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION "litellm_plugins"."usage_rollup_apply"();

CREATE TRIGGER "usage_rollup_after_delete" AFTER DELETE ON "litellm_plugins"."usage_log"
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION "litellm_plugins"."usage_rollup_apply"();

-- Backfill (see the header for its cost): the same statement over the whole log.
LOCK TABLE "litellm_plugins"."usage_log" IN SHARE ROW EXCLUSIVE MODE;
DO $$
BEGIN
    EXECUTE "litellm_plugins"."usage_rollup_sql"('SELECT *, 1 AS w FROM "litellm_plugins"."usage_log"');
END
$$;
