-- CreateTable
CREATE TABLE "litellm_plugins"."health_events" (
    "id" BIGSERIAL NOT NULL,
    "model_id" TEXT NOT NULL,
    "model_group" TEXT NOT NULL,
    "provider" TEXT NOT NULL,
    "state" TEXT NOT NULL,
    "up" BOOLEAN NOT NULL,
    "reason" TEXT,
    "at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "health_events_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "litellm_plugins"."health_probes" (
    "id" BIGSERIAL NOT NULL,
    "model_id" TEXT NOT NULL,
    "model_group" TEXT NOT NULL,
    "provider" TEXT NOT NULL,
    "prober" TEXT NOT NULL,
    "ok" BOOLEAN NOT NULL,
    "latency_ms" INTEGER,
    "status_code" INTEGER,
    "error" TEXT,
    "at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "health_probes_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "litellm_plugins"."health_audit" (
    "id" BIGSERIAL NOT NULL,
    "model_id" TEXT NOT NULL,
    "action" TEXT NOT NULL,
    "reason" TEXT NOT NULL,
    "actor" TEXT NOT NULL,
    "at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "health_audit_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "health_events_model_id_at_idx" ON "litellm_plugins"."health_events"("model_id", "at");

-- CreateIndex
CREATE INDEX "health_probes_model_id_at_idx" ON "litellm_plugins"."health_probes"("model_id", "at");

-- CreateIndex
CREATE INDEX "health_probes_at_idx" ON "litellm_plugins"."health_probes"("at");

-- CreateIndex
CREATE INDEX "health_audit_model_id_at_idx" ON "litellm_plugins"."health_audit"("model_id", "at");
