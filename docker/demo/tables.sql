-- The demo's tables. Created on the primary and on every replica alike: a replica holds
-- tables with the same qualified names, columns and primary keys (see README, Replicas).
-- The second table's quoted names (a space, capitals) show that names are quoted
-- everywhere on the way.
CREATE SCHEMA IF NOT EXISTS shop;

CREATE TABLE IF NOT EXISTS public.accounts (
    id         bigint PRIMARY KEY,
    owner      text NOT NULL,
    balance    numeric(12, 2) NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS shop."Order Items" (
    order_id bigint,
    line     int,
    sku      text,
    qty      int,
    meta     jsonb,
    PRIMARY KEY (order_id, line)
);
