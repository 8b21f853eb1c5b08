-- Starts capturing the demo's tables on the primary (after sql/install.sql).
SELECT pgfanout.track('public.accounts');
SELECT pgfanout.track('shop."Order Items"');
