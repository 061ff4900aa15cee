-- Operators' webhook credits_exhausted (docs/billing.md): an account's first 402 per exhaustion.
--
-- A 402 writes no ledger row (it is refused before anything is held), but credits writes its usage
-- row (status 'rejected', error_type 'insufficient_credits') through the writer's background batch,
-- journalled before the client gets the error. This trigger turns that row into an outbox row in
-- the same transaction: same outbox, cursor, retries and dead letters as every other event, and
-- nothing on the request path.
--
-- "First" = once per balance version: event_id 'exhausted:<account>:v<version>' with
-- credit_accounts.version at the time the row is written, ON CONFLICT DO NOTHING. Every later 402
-- with the same version is the same event; a grant / top-up or a settle bumps the version, so the
-- next 402 after one is a new event. (A settle of a request admitted before the exhaustion that lands
-- after the first 402 also bumps it: the next 402 then fires once more.)
-- The WHEN clause keeps the per-row cost of every other usage row to one comparison.

CREATE FUNCTION "litellm_plugins"."billing_outbox_from_exhausted"() RETURNS TRIGGER
LANGUAGE plpgsql AS $fn$
DECLARE
    acct_version BIGINT;
    acct_balance BIGINT;
BEGIN
    SELECT a.version, a.balance INTO acct_version, acct_balance
    FROM "litellm_plugins"."credit_accounts" a WHERE a.account = NEW.account;
    INSERT INTO "litellm_plugins"."billing_outbox"
        (txid, event_id, account, kind, units, balance_after, call_id, data, created_at)
    VALUES (pg_current_xact_id()::text::bigint,
            'exhausted:' || NEW.account || ':v' || COALESCE(acct_version, 0),
            NEW.account, 'credits_exhausted', 0, acct_balance, NEW.call_id,
            jsonb_build_object('call_id', NEW.call_id, 'requested_model', NEW.requested_model),
            NEW.created_at)
    ON CONFLICT (event_id) DO NOTHING;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER "billing_outbox_after_exhausted_usage"
AFTER INSERT ON "litellm_plugins"."usage_log"
FOR EACH ROW WHEN (NEW.error_type = 'insufficient_credits' AND NEW.account IS NOT NULL)
EXECUTE FUNCTION "litellm_plugins"."billing_outbox_from_exhausted"();
