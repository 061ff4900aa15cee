-- CreateTable
CREATE TABLE "litellm_plugins"."credit_accounts" (
    "account" TEXT NOT NULL,
    "balance" BIGINT NOT NULL,
    "version" BIGINT NOT NULL DEFAULT 0,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "credit_accounts_pkey" PRIMARY KEY ("account")
);

-- CreateTable
CREATE TABLE "litellm_plugins"."credit_ledger" (
    "id" BIGSERIAL NOT NULL,
    "account" TEXT NOT NULL,
    "kind" TEXT NOT NULL,
    "delta" BIGINT NOT NULL,
    "amount" BIGINT NOT NULL,
    "hold_id" TEXT,
    "call_id" TEXT,
    "idempotency_key" TEXT,
    "balance_after" BIGINT,
    "note" TEXT,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "credit_ledger_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "litellm_plugins"."credit_holds" (
    "id" TEXT NOT NULL,
    "call_id" TEXT NOT NULL,
    "account" TEXT NOT NULL,
    "amount" BIGINT NOT NULL,
    "charged" BIGINT,
    "status" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "credit_holds_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "litellm_plugins"."usage_log" (
    "id" TEXT NOT NULL,
    "call_id" TEXT NOT NULL,
    "account" TEXT,
    "user_id" TEXT,
    "team_id" TEXT,
    "key_hash" TEXT,
    "requested_model" TEXT,
    "power_level" TEXT,
    "model_group" TEXT,
    "deployment" TEXT,
    "provider" TEXT,
    "byok" BOOLEAN NOT NULL DEFAULT false,
    "prompt_tokens" INTEGER NOT NULL DEFAULT 0,
    "completion_tokens" INTEGER NOT NULL DEFAULT 0,
    "cost_usd" DECIMAL(24,12) NOT NULL DEFAULT 0,
    "credits_charged" BIGINT NOT NULL DEFAULT 0,
    "latency_ms" INTEGER,
    "stream" BOOLEAN NOT NULL DEFAULT false,
    "status" TEXT NOT NULL,
    "error_type" TEXT,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "usage_log_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "credit_ledger_account_id_idx" ON "litellm_plugins"."credit_ledger"("account", "id");

-- CreateIndex
CREATE UNIQUE INDEX "credit_ledger_hold_id_kind_key" ON "litellm_plugins"."credit_ledger"("hold_id", "kind");

-- CreateIndex
CREATE UNIQUE INDEX "credit_ledger_idempotency_key_key" ON "litellm_plugins"."credit_ledger"("idempotency_key");

-- CreateIndex
CREATE INDEX "credit_holds_status_created_at_idx" ON "litellm_plugins"."credit_holds"("status", "created_at");

-- CreateIndex
CREATE INDEX "credit_holds_call_id_idx" ON "litellm_plugins"."credit_holds"("call_id");

-- CreateIndex
CREATE INDEX "usage_log_account_created_at_idx" ON "litellm_plugins"."usage_log"("account", "created_at");

-- CreateIndex
CREATE INDEX "usage_log_created_at_idx" ON "litellm_plugins"."usage_log"("created_at");

-- CreateIndex
CREATE INDEX "usage_log_call_id_idx" ON "litellm_plugins"."usage_log"("call_id");
