-- Rows written on the primary before the publisher runs: they wait in the outbox
-- (pgfanout.changes) and are shipped as soon as it starts.
INSERT INTO public.accounts (id, owner, balance)
SELECT i, 'owner ' || i, round((i * 7.31)::numeric % 1000, 2) FROM generate_series(1, 1000) AS i
ON CONFLICT DO NOTHING;
INSERT INTO shop."Order Items" (order_id, line, sku, qty, meta)
SELECT o, l, 'SKU-' || (o * 10 + l), l, jsonb_build_object('gift', l = 1, 'tags', jsonb_build_array('seed', l))
FROM generate_series(1, 200) AS o, generate_series(1, 3) AS l
ON CONFLICT DO NOTHING;
