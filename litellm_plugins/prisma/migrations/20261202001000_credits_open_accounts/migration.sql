-- Cold accounts in bulk (docs/credits.md, "Cold accounts"): the accounts that a worker's requests
-- found missing from Redis in one tick are opened (if new) and read in ONE round trip, instead of
-- ~7 round trips and one pool connection per account on the request path.
--
-- * Opening is exactly once per account: INSERT … ON CONFLICT (account) DO NOTHING RETURNING, and the
--   starting `grant` ledger row only for the accounts this call inserted (idempotency key
--   starting-grant:<account>, unique), as credits_apply_batch and credits_hold_pg do. Accounts are
--   inserted in sorted order, like every other account lock, so concurrent batches cannot deadlock.
-- * The read is a later statement of the function: plpgsql takes a fresh snapshot per statement, so it
--   sees accounts another worker opened concurrently (our insert waited for theirs to commit).
-- * While Postgres places the holds (credit_ledger_mode = 'postgres', another worker saw Redis down)
--   nothing is opened or read: one row with out_postgres = true tells the caller to switch back
--   first (an account rebuilt into Redis now could miss holds being placed in Postgres).
--
-- Returns one row per (account, pending hold) -- one row with NULL hold for an account without
-- pending holds -- with the account's balance and version.
CREATE FUNCTION "litellm_plugins"."credits_open_accounts"(p_accounts TEXT[], p_starting BIGINT, p_check_mode BOOLEAN)
RETURNS TABLE (out_account TEXT, out_balance BIGINT, out_version BIGINT, out_hold TEXT, out_amount BIGINT,
               out_ts BIGINT, out_postgres BOOLEAN)
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_check_mode AND EXISTS (SELECT 1 FROM "litellm_plugins"."credit_ledger_mode" WHERE id = 1 AND mode = 'postgres') THEN
        RETURN QUERY SELECT NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, true;
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
    SELECT a.account, a.balance, a.version, h.id, h.amount, extract(epoch FROM h.created_at)::BIGINT, false
    FROM "litellm_plugins"."credit_accounts" a
    LEFT JOIN "litellm_plugins"."credit_holds" h ON h.account = a.account AND h.status = 'pending'
    WHERE a.account = ANY(p_accounts);
END
$fn$;
