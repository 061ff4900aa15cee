-- Billing export (docs/billing.md): a transactional outbox filled by a trigger on the credit ledger,
-- a cursor per exporter and a dead-letter list.
--
-- billing_outbox: one row per ledger charge ('settle') or credit movement ('grant': starting grants,
-- admin grants / top-ups), inserted by the trigger below in the SAME transaction as its ledger row,
-- so a charge the writer commits is exported and a batch it rolls back is not. event_id is stable:
-- the call id for a charge, 'ledger-<id>' otherwise; ON CONFLICT DO NOTHING keeps it unique.
-- Health status changes of a deployment (health_events: down, and up again after a down) are
-- outbox rows too ('provider_down' / 'provider_up', id 'health-<id>', details in data), for the
-- operators' webhooks; billing receivers skip them.
-- txid: the inserting transaction's id. Exporters read rows whose txid is below the oldest running
-- transaction (pg_snapshot_xmin), in (txid, seq) order: that set never grows behind a cursor, so a
-- row committed late by a slow transaction is never skipped (a bigserial alone is assigned at
-- insert time, not commit time).

-- CreateTable
CREATE TABLE "litellm_plugins"."billing_outbox" (
    "seq" BIGSERIAL NOT NULL,
    "txid" BIGINT NOT NULL,
    "event_id" TEXT NOT NULL,
    "ledger_id" BIGINT,
    "account" TEXT NOT NULL,
    "kind" TEXT NOT NULL,
    "units" BIGINT NOT NULL,
    "balance_after" BIGINT,
    "hold_id" TEXT,
    "call_id" TEXT,
    "data" JSONB,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "billing_outbox_pkey" PRIMARY KEY ("seq")
);

-- CreateTable
CREATE TABLE "litellm_plugins"."billing_cursors" (
    "exporter" TEXT NOT NULL,
    "last_txid" BIGINT NOT NULL DEFAULT 0,
    "last_seq" BIGINT NOT NULL DEFAULT 0,
    "exported" BIGINT NOT NULL DEFAULT 0,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "billing_cursors_pkey" PRIMARY KEY ("exporter")
);

-- CreateTable
CREATE TABLE "litellm_plugins"."billing_dead_letters" (
    "id" BIGSERIAL NOT NULL,
    "exporter" TEXT NOT NULL,
    "seq" BIGINT NOT NULL,
    "event_id" TEXT NOT NULL,
    "reason" TEXT NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'dead',
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "billing_dead_letters_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "billing_outbox_event_id_key" ON "litellm_plugins"."billing_outbox"("event_id");

-- CreateIndex
CREATE INDEX "billing_outbox_txid_seq_idx" ON "litellm_plugins"."billing_outbox"("txid", "seq");

-- CreateIndex
CREATE UNIQUE INDEX "billing_dead_letters_exporter_seq_key" ON "litellm_plugins"."billing_dead_letters"("exporter", "seq");

-- CreateIndex
CREATE INDEX "billing_dead_letters_exporter_status_id_idx" ON "litellm_plugins"."billing_dead_letters"("exporter", "status", "id");

CREATE FUNCTION "litellm_plugins"."billing_outbox_from_ledger"() RETURNS TRIGGER
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO "litellm_plugins"."billing_outbox"
        (txid, event_id, ledger_id, account, kind, units, balance_after, hold_id, call_id, created_at)
    VALUES (pg_current_xact_id()::text::bigint,
            CASE WHEN NEW.kind = 'settle' THEN COALESCE(NEW.call_id, NEW.hold_id) ELSE 'ledger-' || NEW.id END,
            NEW.id, NEW.account,
            CASE WHEN NEW.kind = 'settle' THEN 'charge' ELSE 'grant' END,
            CASE WHEN NEW.kind = 'settle' THEN NEW.amount ELSE NEW.delta END,
            NEW.balance_after, NEW.hold_id, NEW.call_id, NEW.created_at)
    ON CONFLICT (event_id) DO NOTHING;
    RETURN NULL;
END
$fn$;

-- Only the entries that move money: 'hold', 'void' and 'expire' rows have delta 0.
CREATE TRIGGER "billing_outbox_after_ledger_insert"
AFTER INSERT ON "litellm_plugins"."credit_ledger"
FOR EACH ROW WHEN (NEW.kind IN ('settle', 'grant'))
EXECUTE FUNCTION "litellm_plugins"."billing_outbox_from_ledger"();

-- A deployment going down or coming back up: only when "up" flips (a first-seen deployment starts up).
CREATE FUNCTION "litellm_plugins"."billing_outbox_from_health"() RETURNS TRIGGER
LANGUAGE plpgsql AS $fn$
DECLARE
    was_up BOOLEAN;
BEGIN
    SELECT p.up INTO was_up FROM "litellm_plugins"."health_events" p
    WHERE p.model_id = NEW.model_id AND p.id < NEW.id ORDER BY p.id DESC LIMIT 1;
    IF NEW.up = COALESCE(was_up, true) THEN
        RETURN NULL;
    END IF;
    INSERT INTO "litellm_plugins"."billing_outbox"
        (txid, event_id, account, kind, units, data, created_at)
    VALUES (pg_current_xact_id()::text::bigint, 'health-' || NEW.id, NEW.provider,
            CASE WHEN NEW.up THEN 'provider_up' ELSE 'provider_down' END, 0,
            jsonb_build_object('model_id', NEW.model_id, 'model_group', NEW.model_group,
                               'provider', NEW.provider, 'state', NEW.state, 'reason', NEW.reason),
            NEW.at)
    ON CONFLICT (event_id) DO NOTHING;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER "billing_outbox_after_health_insert"
AFTER INSERT ON "litellm_plugins"."health_events"
FOR EACH ROW EXECUTE FUNCTION "litellm_plugins"."billing_outbox_from_health"();
