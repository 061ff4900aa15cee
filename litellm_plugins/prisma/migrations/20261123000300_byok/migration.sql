-- CreateTable
CREATE TABLE "litellm_plugins"."byok_keys" (
    "account" TEXT NOT NULL,
    "provider" TEXT NOT NULL,
    "ciphertext" TEXT NOT NULL,
    "enc_key_id" TEXT NOT NULL,
    "last4" TEXT NOT NULL,
    "policy" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "last_used_at" TIMESTAMPTZ(6),
    "last_tested_at" TIMESTAMPTZ(6),
    "last_test_ok" BOOLEAN,

    CONSTRAINT "byok_keys_pkey" PRIMARY KEY ("account","provider")
);

-- CreateTable
CREATE TABLE "litellm_plugins"."byok_audit" (
    "id" BIGSERIAL NOT NULL,
    "at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "account" TEXT NOT NULL,
    "provider" TEXT NOT NULL,
    "action" TEXT NOT NULL,
    "actor" TEXT NOT NULL,
    "detail" JSONB,

    CONSTRAINT "byok_audit_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "byok_keys_enc_key_id_idx" ON "litellm_plugins"."byok_keys"("enc_key_id");

-- CreateIndex
CREATE INDEX "byok_audit_account_at_idx" ON "litellm_plugins"."byok_audit"("account", "at");
