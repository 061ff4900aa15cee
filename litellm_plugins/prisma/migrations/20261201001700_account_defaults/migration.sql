-- CreateTable
CREATE TABLE "litellm_plugins"."account_defaults" (
    "account" TEXT NOT NULL,
    "default_level" TEXT NOT NULL,
    "updated_by" TEXT,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "account_defaults_pkey" PRIMARY KEY ("account")
);

-- CreateIndex
CREATE INDEX "account_defaults_updated_at_idx" ON "litellm_plugins"."account_defaults"("updated_at");
