-- Allowances, buckets and spend caps (docs/credits.md, "Allowances and buckets").
--
-- Safe to run while proxies serve: columns are added with constant defaults (no table rewrite), the
-- functions of earlier migrations stay as they were (a proxy not yet upgraded keeps calling them), and
-- no existing row changes. An account's credits are held in buckets; every unit that is in no bucket
-- row is the account's *paid* balance without expiry: balance - sum(bucket rows' remaining). So an
-- existing balance IS a paid bucket from the moment this runs, with nothing to copy.
--
-- Bucket rows (credit_buckets): 'allowance' (one per account and period: the unique index
-- (account, period) is the second exactly-once gate of a refill), 'promotional' and 'paid' grants
-- that carry an expiry (or promotional ones without). remaining NULL = an unlimited allowance, which
-- is never part of the balance. A charge spends, in this order: the current allowance, promotional
-- buckets by soonest expiry, paid buckets with an expiry by soonest expiry, then the paid balance
-- (the only bucket that may go below zero: an overdraft lands there).
--
-- Ledger: 'allowance' (a period's refill, idempotency key allowance:<account>:<period>, or
-- allowance:<account>:<period>:<amount> for an upgrade), 'allowance_expire' (what was left of a
-- period, allowance-expire:<account>:<period>), 'bucket_expire' (bucket-expire:<id>). bucket_id says
-- which bucket a grant / expiry row moved; split (settles) how many units each bucket row paid
-- ({"<bucket id>": units, ...}; "unlimited": what an unlimited allowance paid; the rest: the paid balance).
-- delta stays what left the balance (balance == sum(delta)); amount is the charge, so a settle paid by
-- an unlimited allowance has delta 0 and amount = the charge.

ALTER TABLE "litellm_plugins"."credit_accounts"
    ADD COLUMN "tier" TEXT,
    ADD COLUMN "allowance_period" TEXT,
    ADD COLUMN "allowance_amount" BIGINT,
    ADD COLUMN "spent_day_key" TEXT,
    ADD COLUMN "spent_day" BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN "spent_week_key" TEXT,
    ADD COLUMN "spent_week" BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN "spent_month_key" TEXT,
    ADD COLUMN "spent_month" BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN "cap_day" BIGINT,
    ADD COLUMN "cap_week" BIGINT,
    ADD COLUMN "cap_month" BIGINT;

ALTER TABLE "litellm_plugins"."credit_ledger"
    ADD COLUMN "bucket_id" BIGINT,
    ADD COLUMN "split" JSONB;

-- CreateTable
CREATE TABLE "litellm_plugins"."credit_buckets" (
    "id" BIGSERIAL NOT NULL,
    "account" TEXT NOT NULL,
    "kind" TEXT NOT NULL,
    "granted" BIGINT NOT NULL,
    "remaining" BIGINT,
    "period" TEXT,
    "expires_at" TIMESTAMPTZ(6),
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "credit_buckets_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "credit_buckets_account_period_key" ON "litellm_plugins"."credit_buckets"("account", "period");

-- CreateIndex
CREATE INDEX "credit_buckets_expires_at_idx" ON "litellm_plugins"."credit_buckets"("expires_at");

-- What Redis needs besides balance and version, as "k=v;..." (cache.py applies it with the version):
-- ap/aa/al the open allowance period, its amount (-1 unlimited) and what is left of it (-1 unlimited);
-- dk/ds wk/ws mk/ms the spend counters (period start date and units); cd/cw/cm the account's own caps.
CREATE FUNCTION "litellm_plugins"."credits_state"(a "litellm_plugins"."credit_accounts") RETURNS TEXT
LANGUAGE sql STABLE AS $fn$
    SELECT 'ap=' || COALESCE(a.allowance_period, '') || ';aa=' || COALESCE(a.allowance_amount::text, '')
        || ';al=' || COALESCE((SELECT COALESCE(b.remaining, -1)::text FROM "litellm_plugins"."credit_buckets" b
                               WHERE b.account = a.account AND b.period = a.allowance_period), '')
        || ';dk=' || COALESCE(a.spent_day_key, '') || ';ds=' || a.spent_day
        || ';wk=' || COALESCE(a.spent_week_key, '') || ';ws=' || a.spent_week
        || ';mk=' || COALESCE(a.spent_month_key, '') || ';ms=' || a.spent_month
        || ';cd=' || COALESCE(a.cap_day::text, '') || ';cw=' || COALESCE(a.cap_week::text, '')
        || ';cm=' || COALESCE(a.cap_month::text, '')
$fn$;

-- The allowance of p_period for an account whose tier (p_tier) grants p_amount per period (-1 unlimited;
-- p_period NULL: the tier has none, only the tier is recorded). Idempotent, and the only writer of
-- allowance rows, so the rules live in one place:
--   * a later period (its start date >= the open one's, key different): what is left of the open
--     allowance expires ('allowance_expire'), the new one is granted ('allowance');
--   * the same period with a larger amount (a tier upgrade): the difference is granted at once;
--     unlimited replaces what was left (which expires);
--   * the same period with a smaller or equal amount (a downgrade): nothing;
--   * an earlier period (a call of it written late): its bucket is granted if it never was, else nothing.
-- So the allowance of a period is the largest of the tiers the account held during it. The caller
-- holds the account row lock, or none: this takes it (in a batch, accounts are locked in sorted
-- order first). Opens an unknown account with its starting grant, as every other entry point does.
CREATE FUNCTION "litellm_plugins"."credits_ensure_allowance"(
    p_account TEXT, p_tier TEXT, p_period TEXT, p_amount BIGINT, p_expires TIMESTAMPTZ, p_starting BIGINT)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $fn$
DECLARE
    cur_p TEXT;
    cur_a BIGINT;
    cur_t TEXT;
    left_units BIGINT;
    bid BIGINT;
    bal BIGINT;
    add_units BIGINT;
BEGIN
    WITH opened AS (
        INSERT INTO "litellm_plugins"."credit_accounts" (account, balance, version)
        VALUES (p_account, p_starting, 1) ON CONFLICT (account) DO NOTHING RETURNING account)
    INSERT INTO "litellm_plugins"."credit_ledger" (account, kind, delta, amount, idempotency_key, balance_after, note)
    SELECT o.account, 'grant', p_starting, p_starting, 'starting-grant:' || o.account, p_starting, 'starting grant'
    FROM opened o;

    SELECT allowance_period, allowance_amount, tier INTO cur_p, cur_a, cur_t
    FROM "litellm_plugins"."credit_accounts" WHERE account = p_account FOR UPDATE;

    IF p_period IS NULL THEN
        IF cur_t IS DISTINCT FROM p_tier THEN
            UPDATE "litellm_plugins"."credit_accounts" SET tier = p_tier WHERE account = p_account;
        END IF;
        RETURN false;
    END IF;

    IF cur_p IS NULL OR (left(p_period, 10) >= left(cur_p, 10) AND p_period <> cur_p) THEN
        left_units := 0;
        IF cur_p IS NOT NULL THEN
            SELECT id, COALESCE(remaining, 0) INTO bid, left_units FROM "litellm_plugins"."credit_buckets"
            WHERE account = p_account AND period = cur_p;
            UPDATE "litellm_plugins"."credit_buckets" SET remaining = 0, updated_at = now() WHERE id = bid;
            left_units := COALESCE(left_units, 0);
        END IF;
        add_units := GREATEST(p_amount, 0);
        INSERT INTO "litellm_plugins"."credit_buckets" (account, kind, granted, remaining, period, expires_at)
        VALUES (p_account, 'allowance', p_amount, CASE WHEN p_amount < 0 THEN NULL ELSE p_amount END, p_period, p_expires)
        ON CONFLICT (account, period) DO NOTHING RETURNING id INTO bid;
        IF bid IS NULL THEN  -- this period's bucket exists already (cannot happen: periods only move forward)
            RAISE EXCEPTION 'credits: allowance bucket % of % exists but is not the open one', p_period, p_account;
        END IF;
        UPDATE "litellm_plugins"."credit_accounts"
        SET balance = balance - left_units + add_units, version = version + 1, allowance_period = p_period,
            allowance_amount = p_amount, tier = p_tier, updated_at = now()
        WHERE account = p_account RETURNING balance INTO bal;
        IF left_units <> 0 THEN
            INSERT INTO "litellm_plugins"."credit_ledger"
                (account, kind, delta, amount, bucket_id, idempotency_key, balance_after, note)
            SELECT p_account, 'allowance_expire', -left_units, left_units, b.id,
                   'allowance-expire:' || p_account || ':' || cur_p, bal - add_units, 'allowance ' || cur_p || ' ended'
            FROM "litellm_plugins"."credit_buckets" b WHERE b.account = p_account AND b.period = cur_p;
        END IF;
        IF p_amount <> 0 THEN
            INSERT INTO "litellm_plugins"."credit_ledger"
                (account, kind, delta, amount, bucket_id, idempotency_key, balance_after, note)
            VALUES (p_account, 'allowance', add_units, p_amount, bid, 'allowance:' || p_account || ':' || p_period,
                    bal, 'allowance ' || p_period || ' (tier ' || COALESCE(p_tier, '-') || ')');
        END IF;
        RETURN true;
    END IF;

    IF p_period = cur_p AND cur_a >= 0 AND (p_amount < 0 OR p_amount > cur_a) THEN
        SELECT id, remaining INTO bid, left_units FROM "litellm_plugins"."credit_buckets"
        WHERE account = p_account AND period = cur_p;
        IF p_amount < 0 THEN  -- to unlimited: what was left of the finite allowance is replaced
            add_units := -left_units;
            UPDATE "litellm_plugins"."credit_buckets" SET granted = -1, remaining = NULL, updated_at = now() WHERE id = bid;
        ELSE
            add_units := p_amount - cur_a;
            UPDATE "litellm_plugins"."credit_buckets" SET granted = p_amount, remaining = remaining + add_units,
                updated_at = now() WHERE id = bid;
        END IF;
        UPDATE "litellm_plugins"."credit_accounts"
        SET balance = balance + add_units, version = version + 1, allowance_amount = p_amount, tier = p_tier,
            updated_at = now()
        WHERE account = p_account RETURNING balance INTO bal;
        INSERT INTO "litellm_plugins"."credit_ledger"
            (account, kind, delta, amount, bucket_id, idempotency_key, balance_after, note)
        VALUES (p_account, 'allowance', add_units, p_amount, bid,
                'allowance:' || p_account || ':' || p_period || ':' || p_amount, bal,
                'allowance ' || p_period || ' raised to ' || CASE WHEN p_amount < 0 THEN 'unlimited' ELSE p_amount::text END
                || ' (tier ' || COALESCE(p_tier, '-') || ')');
        RETURN true;
    END IF;

    IF left(p_period, 10) < left(cur_p, 10) THEN
        -- An earlier period, named by a call that ended in it but is written only now (after the
        -- sweep or another account's records opened a later one): granted if it never was, so a
        -- period with calls in it is never skipped; the batch's charges of that period spend it, and
        -- credits_apply_batch_v2 expires what is left once they are in.
        INSERT INTO "litellm_plugins"."credit_buckets" (account, kind, granted, remaining, period, expires_at)
        VALUES (p_account, 'allowance', p_amount, CASE WHEN p_amount < 0 THEN NULL ELSE p_amount END, p_period, p_expires)
        ON CONFLICT (account, period) DO NOTHING RETURNING id INTO bid;
        IF bid IS NULL OR p_amount = 0 THEN
            RETURN false;
        END IF;
        add_units := GREATEST(p_amount, 0);
        UPDATE "litellm_plugins"."credit_accounts" SET balance = balance + add_units, version = version + 1,
            updated_at = now() WHERE account = p_account RETURNING balance INTO bal;
        INSERT INTO "litellm_plugins"."credit_ledger"
            (account, kind, delta, amount, bucket_id, idempotency_key, balance_after, note)
        VALUES (p_account, 'allowance', add_units, p_amount, bid, 'allowance:' || p_account || ':' || p_period,
                bal, 'allowance ' || p_period || ' (tier ' || COALESCE(p_tier, '-') || '), for calls written after it ended');
        RETURN true;
    END IF;

    IF cur_t IS DISTINCT FROM p_tier THEN
        UPDATE "litellm_plugins"."credit_accounts" SET tier = p_tier WHERE account = p_account;
    END IF;
    RETURN false;
END
$fn$;

-- Expire what is left in the given buckets (their accounts are locked by the caller): each bucket's
-- remainder leaves the balance once, as 'allowance_expire' (allowance-expire:<account>:<period>) for an
-- allowance, 'bucket_expire' (bucket-expire:<id>) otherwise. Returns the accounts changed.
CREATE FUNCTION "litellm_plugins"."credits_expire_ids"(p_ids BIGINT[])
RETURNS SETOF TEXT
LANGUAGE plpgsql AS $fn$
DECLARE
    e_id BIGINT[];
    e_account TEXT[];
    e_units BIGINT[];
    e_kind TEXT[];
    e_period TEXT[];
BEGIN
    WITH gone AS (
        UPDATE "litellm_plugins"."credit_buckets" b SET remaining = 0, updated_at = now()
        FROM (SELECT id, remaining FROM "litellm_plugins"."credit_buckets"
              WHERE id = ANY(p_ids) AND remaining IS DISTINCT FROM 0 FOR UPDATE) o
        WHERE b.id = o.id
        RETURNING b.id, b.account, COALESCE(o.remaining, 0) AS units, b.kind, b.period)
    SELECT array_agg(id ORDER BY id), array_agg(account ORDER BY id), array_agg(units ORDER BY id),
           array_agg(kind ORDER BY id), array_agg(period ORDER BY id)
    INTO e_id, e_account, e_units, e_kind, e_period FROM gone;
    IF e_id IS NULL THEN
        RETURN;
    END IF;
    UPDATE "litellm_plugins"."credit_accounts" a SET balance = a.balance - d.units, version = a.version + 1,
        updated_at = now()
    FROM (SELECT account, sum(units)::BIGINT AS units FROM unnest(e_account, e_units) AS x(account, units)
          GROUP BY account) d
    WHERE a.account = d.account;
    INSERT INTO "litellm_plugins"."credit_ledger" (account, kind, delta, amount, bucket_id, idempotency_key, balance_after, note)
    SELECT e.account, CASE WHEN e.kind = 'allowance' THEN 'allowance_expire' ELSE 'bucket_expire' END,
           -e.units, e.units, e.id,
           CASE WHEN e.kind = 'allowance' THEN 'allowance-expire:' || e.account || ':' || e.period
                ELSE 'bucket-expire:' || e.id END,
           a.balance + COALESCE(sum(e.units) OVER (PARTITION BY e.account ORDER BY e.id
                                ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING), 0),
           CASE WHEN e.kind = 'allowance' THEN 'allowance ' || e.period || ' ended' ELSE 'bucket ' || e.id || ' expired' END
    FROM unnest(e_id, e_account, e_units, e_kind, e_period) AS e(id, account, units, kind, period)
    JOIN "litellm_plugins"."credit_accounts" a ON a.account = e.account
    WHERE e.units <> 0;
    RETURN QUERY SELECT DISTINCT x FROM unnest(e_account) AS x;
END
$fn$;

-- Charges of one batch spread over the accounts' buckets (the rows are locked by the caller). Each
-- account's charges, in the order they happened, cover consecutive ranges [lo, hi) of its spend; its
-- live buckets, in spending order, cover consecutive ranges of what they hold (an unlimited one: to
-- 2^62); what a charge's range shares with a bucket's is what that bucket pays. The rest of a charge
-- is paid from the paid balance. Returns one row per (settle, bucket) that paid something.
CREATE FUNCTION "litellm_plugins"."credits_split"(
    s_id TEXT[], s_account TEXT[], s_charge BIGINT[], s_n BIGINT[], p_now TIMESTAMPTZ)
RETURNS TABLE (out_id TEXT, out_bucket BIGINT, out_units BIGINT, out_unlimited BOOLEAN)
LANGUAGE sql AS $fn$
    WITH s AS (
        SELECT t.id, t.account, t.charge,
               (sum(t.charge) OVER w - t.charge)::numeric AS lo, (sum(t.charge) OVER w)::numeric AS hi
        FROM unnest(s_id, s_account, s_charge, s_n) AS t(id, account, charge, n)
        WINDOW w AS (PARTITION BY t.account ORDER BY t.n ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)),
    unexpired AS (
        SELECT b.id, b.account, b.remaining, b.kind, b.expires_at,
               row_number() OVER (PARTITION BY b.account, b.kind = 'allowance' ORDER BY b.expires_at, b.id) AS nth
        FROM "litellm_plugins"."credit_buckets" b
        WHERE b.account = ANY(s_account) AND (b.remaining IS NULL OR b.remaining > 0)
          AND (b.expires_at IS NULL OR b.expires_at > p_now)),
    live AS (  -- of the allowance buckets, only the one whose period is p_now's: the first to end after it
        SELECT u.id, u.account, u.remaining IS NULL AS unlimited,
               COALESCE(u.remaining, 4611686018427387904)::numeric AS size,
               CASE u.kind WHEN 'allowance' THEN 0 WHEN 'promotional' THEN 1 ELSE 2 END AS rank, u.expires_at
        FROM unexpired u WHERE u.kind <> 'allowance' OR u.nth = 1),
    ranged AS (
        SELECT id, account, unlimited, sum(size) OVER w - size AS lo, sum(size) OVER w AS hi
        FROM live WINDOW w AS (PARTITION BY account ORDER BY rank, expires_at NULLS LAST, id
                               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))
    SELECT s.id, r.id, (LEAST(s.hi, r.hi) - GREATEST(s.lo, r.lo))::bigint, r.unlimited
    FROM s JOIN ranged r ON r.account = s.account AND LEAST(s.hi, r.hi) > GREATEST(s.lo, r.lo)
$fn$;

-- credits_apply_batch with allowances, buckets and spend counters. As before (migration
-- 20261123000500, whose exactly-once gates are unchanged), plus:
--   a_*: the allowance each account's records say applies now (account, tier, period, amount,
--        expiry): credits_ensure_allowance runs for each before the charges, so a charge made in a new
--        period spends the new allowance even when this batch is the first to hear of the period;
--   p_now: when the batch's calls ended (the first of them): which buckets are live for its charges;
--   p_day / p_week / p_month: the spend counters' keys then; p_flushed: the writer's clock now.
-- After the charges, allowance buckets of past periods (granted late, for calls written after their
-- period ended) lose what is left ('allowance_expire'), as the rollover does for the open one.
-- Every account of the batch is locked, in sorted order, before anything changes.
-- Returns balance, version and credits_state of every account a settle or an allowance changed.
CREATE FUNCTION "litellm_plugins"."credits_apply_batch_v2"(
    h_id TEXT[], h_call TEXT[], h_account TEXT[], h_amount BIGINT[], h_ts FLOAT8[],
    s_id TEXT[], s_charge BIGINT[], v_id TEXT[], starting BIGINT,
    a_account TEXT[], a_tier TEXT[], a_period TEXT[], a_amount BIGINT[], a_expires FLOAT8[],
    p_now FLOAT8, p_day TEXT, p_week TEXT, p_month TEXT, p_flushed FLOAT8)
RETURNS TABLE (out_account TEXT, out_balance BIGINT, out_version BIGINT, out_state TEXT)
LANGUAGE plpgsql AS $fn$
DECLARE
    st_id TEXT[];
    st_account TEXT[];
    st_call TEXT[];
    st_charge BIGINT[];
    st_n BIGINT[];
    st_paid BIGINT[];
    st_split JSONB[];
    sp_id TEXT[];
    sp_bucket BIGINT[];
    sp_units BIGINT[];
    sp_unlimited BOOLEAN[];
    past BIGINT[];
    accts TEXT[];
    changed TEXT[] := '{}';
    now_ts TIMESTAMPTZ := to_timestamp(p_now);
    i INT;
BEGIN
    IF cardinality(h_id) > 0 THEN
        INSERT INTO "litellm_plugins"."credit_holds" (id, call_id, account, amount, status, created_at)
        SELECT t.id, t.call_id, t.account, t.amount, 'pending', to_timestamp(t.ts)
        FROM unnest(h_id, h_call, h_account, h_amount, h_ts) AS t(id, call_id, account, amount, ts)
        ON CONFLICT (id) DO NOTHING;
        INSERT INTO "litellm_plugins"."credit_ledger" (account, kind, delta, amount, hold_id, call_id, created_at)
        SELECT t.account, 'hold', 0, t.amount, t.id, t.call_id, to_timestamp(t.ts)
        FROM unnest(h_id, h_call, h_account, h_amount, h_ts) AS t(id, call_id, account, amount, ts)
        ON CONFLICT DO NOTHING;
    END IF;

    IF cardinality(s_id) > 0 THEN
        WITH settled AS (
            UPDATE "litellm_plugins"."credit_holds" h
            SET status = 'settled', charged = v.charge, updated_at = now()
            FROM unnest(s_id, s_charge) WITH ORDINALITY AS v(id, charge, n)
            WHERE h.id = v.id AND h.status <> 'settled'
            RETURNING h.id, h.account, h.call_id, v.charge, v.n)
        SELECT array_agg(id ORDER BY n), array_agg(account ORDER BY n), array_agg(call_id ORDER BY n),
               array_agg(charge ORDER BY n), array_agg(n ORDER BY n)
        INTO st_id, st_account, st_call, st_charge, st_n
        FROM settled;
    END IF;

    SELECT array_agg(DISTINCT a ORDER BY a) INTO accts
    FROM unnest(COALESCE(st_account, '{}'::text[]) || a_account) AS a;
    IF accts IS NOT NULL THEN
        WITH opened AS (
            INSERT INTO "litellm_plugins"."credit_accounts" (account, balance, version)
            SELECT a, starting, 1 FROM unnest(accts) AS a
            ON CONFLICT (account) DO NOTHING RETURNING account)
        INSERT INTO "litellm_plugins"."credit_ledger"
            (account, kind, delta, amount, idempotency_key, balance_after, note)
        SELECT o.account, 'grant', starting, starting, 'starting-grant:' || o.account, starting, 'starting grant'
        FROM opened o;
        PERFORM 1 FROM "litellm_plugins"."credit_accounts" a
        WHERE a.account = ANY(accts) ORDER BY a.account FOR UPDATE;
    END IF;

    FOR i IN 1 .. COALESCE(cardinality(a_account), 0) LOOP
        IF "litellm_plugins"."credits_ensure_allowance"(a_account[i], a_tier[i], a_period[i], a_amount[i],
                                                         to_timestamp(a_expires[i]), starting) THEN
            changed := changed || a_account[i];
        END IF;
    END LOOP;

    IF st_id IS NOT NULL THEN
        SELECT array_agg(x.out_id), array_agg(x.out_bucket), array_agg(x.out_units), array_agg(x.out_unlimited)
        INTO sp_id, sp_bucket, sp_units, sp_unlimited
        FROM "litellm_plugins"."credits_split"(st_id, st_account, st_charge, st_n, now_ts) x;

        UPDATE "litellm_plugins"."credit_buckets" b SET remaining = b.remaining - u.units, updated_at = now()
        FROM (SELECT x.bucket, sum(x.units)::BIGINT AS units
              FROM unnest(sp_bucket, sp_units, sp_unlimited) AS x(bucket, units, unlimited)
              WHERE NOT x.unlimited GROUP BY x.bucket) u
        WHERE b.id = u.bucket;

        -- per settle: what the paid balance and the limited buckets paid (paid: the balance moves by it)
        SELECT array_agg(t.charge - COALESCE(f.free, 0) ORDER BY t.n), array_agg(f.split ORDER BY t.n)
        INTO st_paid, st_split
        FROM unnest(st_id, st_charge, st_n) AS t(id, charge, n)
        LEFT JOIN (SELECT x.id, (sum(x.units) FILTER (WHERE x.unlimited))::BIGINT AS free,
                          jsonb_object_agg(CASE WHEN x.unlimited THEN 'unlimited' ELSE x.bucket::text END, x.units) AS split
                   FROM unnest(sp_id, sp_bucket, sp_units, sp_unlimited) AS x(id, bucket, units, unlimited)
                   GROUP BY x.id) f ON f.id = t.id;

        UPDATE "litellm_plugins"."credit_accounts" a
        SET balance = a.balance - d.paid, version = a.version + 1, updated_at = now(),
            spent_day = CASE WHEN a.spent_day_key = p_day THEN a.spent_day ELSE 0 END + d.total, spent_day_key = p_day,
            spent_week = CASE WHEN a.spent_week_key = p_week THEN a.spent_week ELSE 0 END + d.total, spent_week_key = p_week,
            spent_month = CASE WHEN a.spent_month_key = p_month THEN a.spent_month ELSE 0 END + d.total,
            spent_month_key = p_month
        FROM (SELECT t.account, sum(t.charge)::BIGINT AS total, sum(t.paid)::BIGINT AS paid
              FROM unnest(st_account, st_charge, st_paid) AS t(account, charge, paid)
              GROUP BY t.account) d
        WHERE a.account = d.account;

        -- balance_after of each settle row: the account's final balance plus what left it after this one.
        INSERT INTO "litellm_plugins"."credit_ledger"
            (account, kind, delta, amount, hold_id, call_id, balance_after, split)
        SELECT t.account, 'settle', -t.paid, t.charge, t.id, t.call_id,
               a.balance + COALESCE(sum(t.paid) OVER (PARTITION BY t.account ORDER BY t.n
                                    ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING), 0),
               t.split
        FROM unnest(st_id, st_account, st_call, st_charge, st_n, st_paid, st_split)
             AS t(id, account, call_id, charge, n, paid, split)
        JOIN "litellm_plugins"."credit_accounts" a ON a.account = t.account;
        changed := changed || st_account;
    END IF;

    IF cardinality(v_id) > 0 THEN
        WITH voided AS (
            UPDATE "litellm_plugins"."credit_holds" h SET status = 'voided', updated_at = now()
            FROM unnest(v_id) AS v(id)
            WHERE h.id = v.id AND h.status = 'pending'
            RETURNING h.id, h.account, h.amount, h.call_id)
        INSERT INTO "litellm_plugins"."credit_ledger" (account, kind, delta, amount, hold_id, call_id)
        SELECT voided.account, 'void', 0, voided.amount, voided.id, voided.call_id FROM voided
        ON CONFLICT DO NOTHING;
    END IF;

    IF accts IS NOT NULL AND cardinality(a_account) > 0 THEN
        SELECT array_agg(b.id ORDER BY b.id) INTO past FROM "litellm_plugins"."credit_buckets" b
        JOIN "litellm_plugins"."credit_accounts" a ON a.account = b.account
        WHERE b.account = ANY(a_account) AND b.kind = 'allowance' AND b.period <> a.allowance_period
          AND b.remaining > 0 AND b.expires_at <= to_timestamp(p_flushed);
        IF past IS NOT NULL THEN
            PERFORM "litellm_plugins"."credits_expire_ids"(past);
            changed := changed || a_account;
        END IF;
    END IF;

    RETURN QUERY SELECT a.account, a.balance, a.version, "litellm_plugins"."credits_state"(a)
    FROM "litellm_plugins"."credit_accounts" a WHERE a.account = ANY(changed);
END
$fn$;

-- credits_open_accounts with each account's credits_state (for the Redis rebuild).
CREATE FUNCTION "litellm_plugins"."credits_open_accounts_v2"(p_accounts TEXT[], p_starting BIGINT, p_check_mode BOOLEAN)
RETURNS TABLE (out_account TEXT, out_balance BIGINT, out_version BIGINT, out_hold TEXT, out_amount BIGINT,
               out_ts BIGINT, out_postgres BOOLEAN, out_state TEXT)
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_check_mode AND EXISTS (SELECT 1 FROM "litellm_plugins"."credit_ledger_mode" WHERE id = 1 AND mode = 'postgres') THEN
        RETURN QUERY SELECT NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, true, NULL::TEXT;
        RETURN;
    END IF;

    WITH opened AS (
        INSERT INTO "litellm_plugins"."credit_accounts" (account, balance, version)
        SELECT a, p_starting, 1 FROM (SELECT DISTINCT a FROM unnest(p_accounts) AS a) d ORDER BY a
        ON CONFLICT (account) DO NOTHING RETURNING account)
    INSERT INTO "litellm_plugins"."credit_ledger" (account, kind, delta, amount, idempotency_key, balance_after, note)
    SELECT o.account, 'grant', p_starting, p_starting, 'starting-grant:' || o.account, p_starting, 'starting grant'
    FROM opened o;

    RETURN QUERY
    SELECT a.account, a.balance, a.version, h.id, h.amount, extract(epoch FROM h.created_at)::BIGINT, false,
           "litellm_plugins"."credits_state"(a)
    FROM "litellm_plugins"."credit_accounts" a
    LEFT JOIN "litellm_plugins"."credit_holds" h ON h.account = a.account AND h.status = 'pending'
    WHERE a.account = ANY(p_accounts);
END
$fn$;

-- credits_hold_pg (migration 20261202000000) with the allowance and the caps, for the Postgres path:
-- the allowance of now is applied first (credits_ensure_allowance), an unlimited allowance of the
-- open period skips the balance check, and a cap (the smaller of the tier's p_cap_* and the account's
-- cap_*) refuses with status 2 when spent this period + pending holds + this hold would pass it
-- (out_cap: 1 day, 2 week, 3 month; out_cap_units: the cap). Otherwise as credits_hold_pg.
CREATE FUNCTION "litellm_plugins"."credits_hold_pg_v2"(
    p_id TEXT, p_call TEXT, p_account TEXT, p_amount BIGINT, p_ts FLOAT8, p_unflushed BIGINT,
    p_starting BIGINT, p_grace FLOAT8,
    p_tier TEXT, p_period TEXT, p_alw BIGINT, p_expires FLOAT8, p_day TEXT, p_week TEXT, p_month TEXT,
    p_cap_day BIGINT, p_cap_week BIGINT, p_cap_month BIGINT)
RETURNS TABLE (out_status INT, out_balance BIGINT, out_held BIGINT, out_wait_ms INT, out_cap INT,
               out_cap_units BIGINT, out_state TEXT)
LANGUAGE plpgsql AS $fn$
DECLARE
    m TEXT;
    m_since TIMESTAMPTZ;
    m_used BOOLEAN;
    acct "litellm_plugins"."credit_accounts";
    pend BIGINT;
    cap BIGINT;
    spent BIGINT;
    k INT;
BEGIN
    SELECT mode, since, used INTO m, m_since, m_used FROM "litellm_plugins"."credit_ledger_mode" WHERE id = 1;
    IF m IS DISTINCT FROM 'postgres' THEN
        RETURN QUERY SELECT -2, 0::BIGINT, 0::BIGINT, 0, 0, 0::BIGINT, NULL::TEXT;
        RETURN;
    END IF;
    IF clock_timestamp() < m_since + make_interval(secs => p_grace) THEN
        RETURN QUERY SELECT -3, 0::BIGINT, 0::BIGINT,
            GREATEST(1, ceil(extract(epoch FROM (m_since + make_interval(secs => p_grace) - clock_timestamp())) * 1000))::INT,
            0, 0::BIGINT, NULL::TEXT;
        RETURN;
    END IF;
    IF NOT m_used THEN
        UPDATE "litellm_plugins"."credit_ledger_mode" SET used = true WHERE id = 1 AND mode = 'postgres' AND NOT used;
    END IF;
    SELECT mode INTO m FROM "litellm_plugins"."credit_ledger_mode" WHERE id = 1 FOR SHARE;
    IF m IS DISTINCT FROM 'postgres' THEN
        RETURN QUERY SELECT -2, 0::BIGINT, 0::BIGINT, 0, 0, 0::BIGINT, NULL::TEXT;
        RETURN;
    END IF;

    -- opens the account if new, locks its row, applies the allowance of now
    PERFORM "litellm_plugins"."credits_ensure_allowance"(p_account, p_tier, p_period, p_alw, to_timestamp(p_expires), p_starting);
    SELECT * INTO acct FROM "litellm_plugins"."credit_accounts" a WHERE a.account = p_account FOR UPDATE;
    SELECT COALESCE(sum(h.amount), 0)::BIGINT INTO pend FROM "litellm_plugins"."credit_holds" h
    WHERE h.account = p_account AND h.status = 'pending';
    pend := pend + p_unflushed;
    IF EXISTS (SELECT 1 FROM "litellm_plugins"."credit_holds" h WHERE h.id = p_id) THEN
        RETURN QUERY SELECT 1, acct.balance, pend, 0, 0, 0::BIGINT, "litellm_plugins"."credits_state"(acct);
        RETURN;
    END IF;
    FOR k IN 1 .. 3 LOOP
        IF k = 1 THEN
            cap := LEAST(p_cap_day, acct.cap_day);
            spent := CASE WHEN acct.spent_day_key = p_day THEN acct.spent_day ELSE 0 END;
        ELSIF k = 2 THEN
            cap := LEAST(p_cap_week, acct.cap_week);
            spent := CASE WHEN acct.spent_week_key = p_week THEN acct.spent_week ELSE 0 END;
        ELSE
            cap := LEAST(p_cap_month, acct.cap_month);
            spent := CASE WHEN acct.spent_month_key = p_month THEN acct.spent_month ELSE 0 END;
        END IF;
        IF cap IS NOT NULL AND spent + pend + p_amount > cap THEN
            RETURN QUERY SELECT 2, acct.balance, pend, 0, k, cap, "litellm_plugins"."credits_state"(acct);
            RETURN;
        END IF;
    END LOOP;
    IF NOT COALESCE(acct.allowance_amount = -1 AND acct.allowance_period = p_period, false)
       AND (acct.balance - pend < p_amount OR (p_amount = 0 AND acct.balance - pend < 0)) THEN
        RETURN QUERY SELECT 0, acct.balance, pend, 0, 0, 0::BIGINT, "litellm_plugins"."credits_state"(acct);
        RETURN;
    END IF;
    IF p_amount > 0 THEN
        INSERT INTO "litellm_plugins"."credit_holds" (id, call_id, account, amount, status, created_at)
        VALUES (p_id, p_call, p_account, p_amount, 'pending', to_timestamp(p_ts));
        INSERT INTO "litellm_plugins"."credit_ledger" (account, kind, delta, amount, hold_id, call_id, created_at)
        VALUES (p_account, 'hold', 0, p_amount, p_id, p_call, to_timestamp(p_ts)) ON CONFLICT DO NOTHING;
    END IF;
    RETURN QUERY SELECT 1, acct.balance, pend + p_amount, 0, 0, 0::BIGINT, "litellm_plugins"."credits_state"(acct);
END
$fn$;

-- The background sweep's expiry of buckets whose expires_at has passed: promotional / paid grants,
-- and allowances no request or renewal closed (a tier that no longer has one, a past period granted
-- late). Up to p_limit buckets per call; accounts locked in sorted order. Returns the accounts changed.
CREATE FUNCTION "litellm_plugins"."credits_expire_buckets"(p_now FLOAT8, p_limit INT)
RETURNS TABLE (out_account TEXT)
LANGUAGE plpgsql AS $fn$
DECLARE
    ids BIGINT[];
    accts TEXT[];
BEGIN
    SELECT array_agg(b.id), array_agg(DISTINCT b.account ORDER BY b.account) INTO ids, accts FROM (
        SELECT id, account FROM "litellm_plugins"."credit_buckets"
        WHERE expires_at <= to_timestamp(p_now) AND remaining IS DISTINCT FROM 0 LIMIT p_limit) b;
    IF ids IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM "litellm_plugins"."credit_accounts" a WHERE a.account = ANY(accts) ORDER BY a.account FOR UPDATE;
    RETURN QUERY SELECT x FROM "litellm_plugins"."credits_expire_ids"(ids) AS x;
END
$fn$;

-- Billing export: an allowance refill is an outbox event too ('allowance_reset', for the webhook of
-- the same name); expiries are not exported (billing receivers meter charges and grants).
CREATE OR REPLACE FUNCTION "litellm_plugins"."billing_outbox_from_ledger"() RETURNS TRIGGER
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO "litellm_plugins"."billing_outbox"
        (txid, event_id, ledger_id, account, kind, units, balance_after, hold_id, call_id, data, created_at)
    VALUES (pg_current_xact_id()::text::bigint,
            CASE WHEN NEW.kind = 'settle' THEN COALESCE(NEW.call_id, NEW.hold_id) ELSE 'ledger-' || NEW.id END,
            NEW.id, NEW.account,
            CASE NEW.kind WHEN 'settle' THEN 'charge' WHEN 'allowance' THEN 'allowance_reset' ELSE 'grant' END,
            CASE WHEN NEW.kind = 'settle' THEN NEW.amount ELSE NEW.delta END,
            NEW.balance_after, NEW.hold_id, NEW.call_id,
            CASE WHEN NEW.kind = 'allowance' THEN jsonb_build_object('idempotency_key', NEW.idempotency_key,
                 'allowance', NEW.amount, 'note', NEW.note) END,
            NEW.created_at)
    ON CONFLICT (event_id) DO NOTHING;
    RETURN NULL;
END
$fn$;

DROP TRIGGER "billing_outbox_after_ledger_insert" ON "litellm_plugins"."credit_ledger";
CREATE TRIGGER "billing_outbox_after_ledger_insert"
AFTER INSERT ON "litellm_plugins"."credit_ledger"
FOR EACH ROW WHEN (NEW.kind IN ('settle', 'grant', 'allowance'))
EXECUTE FUNCTION "litellm_plugins"."billing_outbox_from_ledger"();
