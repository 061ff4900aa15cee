-- CreateSchema
CREATE SCHEMA IF NOT EXISTS "litellm_plugins";

-- CreateTable
CREATE TABLE "litellm_plugins"."_plugin_migrations" (
    "name" TEXT NOT NULL,
    "checksum" TEXT NOT NULL,
    "applied_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "_plugin_migrations_pkey" PRIMARY KEY ("name")
);
