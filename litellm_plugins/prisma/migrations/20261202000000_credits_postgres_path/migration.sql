-- The Postgres path of the credit ledger (docs/credits.md, "Redis down"): while Redis is unreachable
-- a hold is placed here, row-locked on the account, instead of by the Redis HOLD script.
--
-- credit_ledger_mode (one row, id 1): which store places holds. 'redis' normally; a worker whose
-- Redis call failed sets 'postgres' (since = when); the first worker that reaches Redis again flips
-- it back to 'redis' after rebuilding the Redis accounts from Postgres (FOR UPDATE on this row, so
-- it waits for every Postgres hold in flight, and no Postgres hold can start meanwhile).
-- used: a Postgres hold was placed since the switch (only then is a Redis rebuild needed).

-- CreateTable
CREATE TABLE "litellm_plugins"."credit_ledger_mode" (
    "id" INTEGER NOT NULL,
    "mode" TEXT NOT NULL,
    "since" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "used" BOOLEAN NOT NULL DEFAULT false,

    CONSTRAINT "credit_ledger_mode_pkey" PRIMARY KEY ("id")
);

INSERT INTO "litellm_plugins"."credit_ledger_mode" (id, mode) VALUES (1, 'redis');

-- One hold through Postgres, in one round trip (called in autocommit: the body is one transaction;
-- plpgsql takes a fresh snapshot per statement, so the pending sum read after the account lock sees
-- every hold committed before the lock was granted). Returns
--   out_status  1 placed (or already placed: same hold id), 0 insufficient,
--              -2 Postgres is not the hold store (mode 'redis': someone switched back),
--              -3 too early: wait out_wait_ms (holds Redis granted before the outage are still
--                 reaching Postgres through the workers' writers; p_grace seconds after the switch);
--   out_balance, out_held (pending holds + p_unflushed, after this hold).
-- p_unflushed: holds the calling worker placed through Redis that its writer has not written yet.
-- An account never seen is opened with its starting grant (idempotency key starting-grant:<account>).
CREATE FUNCTION "litellm_plugins"."credits_hold_pg"(
    p_id TEXT, p_call TEXT, p_account TEXT, p_amount BIGINT, p_ts FLOAT8, p_unflushed BIGINT,
    p_starting BIGINT, p_grace FLOAT8)
RETURNS TABLE (out_status INT, out_balance BIGINT, out_held BIGINT, out_wait_ms INT)
LANGUAGE plpgsql AS $fn$
DECLARE
    m TEXT;
    m_since TIMESTAMPTZ;
    m_used BOOLEAN;
    bal BIGINT;
    pend BIGINT;
BEGIN
    SELECT mode, since, used INTO m, m_since, m_used FROM "litellm_plugins"."credit_ledger_mode" WHERE id = 1;
    IF m IS DISTINCT FROM 'postgres' THEN
        RETURN QUERY SELECT -2, 0::BIGINT, 0::BIGINT, 0;
        RETURN;
    END IF;
    IF clock_timestamp() < m_since + make_interval(secs => p_grace) THEN
        RETURN QUERY SELECT -3, 0::BIGINT, 0::BIGINT,
            GREATEST(1, ceil(extract(epoch FROM (m_since + make_interval(secs => p_grace) - clock_timestamp())) * 1000))::INT;
        RETURN;
    END IF;
    IF NOT m_used THEN  -- the first hold of this outage marks it (the switch back then rebuilds Redis)
        UPDATE "litellm_plugins"."credit_ledger_mode" SET used = true WHERE id = 1 AND mode = 'postgres' AND NOT used;
    END IF;
    -- Held until commit: a switch back (FOR UPDATE) waits for this hold, and one that won first is seen here.
    SELECT mode INTO m FROM "litellm_plugins"."credit_ledger_mode" WHERE id = 1 FOR SHARE;
    IF m IS DISTINCT FROM 'postgres' THEN
        RETURN QUERY SELECT -2, 0::BIGINT, 0::BIGINT, 0;
        RETURN;
    END IF;

    WITH opened AS (
        INSERT INTO "litellm_plugins"."credit_accounts" (account, balance, version)
        VALUES (p_account, p_starting, 1) ON CONFLICT (account) DO NOTHING RETURNING account)
    INSERT INTO "litellm_plugins"."credit_ledger" (account, kind, delta, amount, idempotency_key, balance_after, note)
    SELECT o.account, 'grant', p_starting, p_starting, 'starting-grant:' || o.account, p_starting, 'starting grant'
    FROM opened o;

    -- The account row lock: every Postgres hold of this account, on any worker or instance, waits here.
    SELECT a.balance INTO bal FROM "litellm_plugins"."credit_accounts" a WHERE a.account = p_account FOR UPDATE;
    SELECT COALESCE(sum(h.amount), 0)::BIGINT INTO pend FROM "litellm_plugins"."credit_holds" h
    WHERE h.account = p_account AND h.status = 'pending';
    pend := pend + p_unflushed;
    IF EXISTS (SELECT 1 FROM "litellm_plugins"."credit_holds" h WHERE h.id = p_id) THEN
        RETURN QUERY SELECT 1, bal, pend, 0;
        RETURN;
    END IF;
    IF bal - pend < p_amount OR (p_amount = 0 AND bal - pend < 0) THEN
        RETURN QUERY SELECT 0, bal, pend, 0;
        RETURN;
    END IF;
    IF p_amount > 0 THEN
        INSERT INTO "litellm_plugins"."credit_holds" (id, call_id, account, amount, status, created_at)
        VALUES (p_id, p_call, p_account, p_amount, 'pending', to_timestamp(p_ts));
        INSERT INTO "litellm_plugins"."credit_ledger" (account, kind, delta, amount, hold_id, call_id, created_at)
        VALUES (p_account, 'hold', 0, p_amount, p_id, p_call, to_timestamp(p_ts)) ON CONFLICT DO NOTHING;
    END IF;
    RETURN QUERY SELECT 1, bal, pend + p_amount, 0;
END
$fn$;
