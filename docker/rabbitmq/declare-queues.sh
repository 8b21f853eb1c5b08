#!/bin/sh
# One-shot of docker-compose.cluster.yml: once the three nodes run, declares each replica's
# queue and dead-letter queue as quorum queues (a member on every node) with the arguments
# pgfanout-listener --queue-type quorum declares them with, and binds the queues to the
# exchange, before the publisher ships anything. Queues: $QUEUES (space-separated).
set -eu
admin() { rabbitmqadmin -H rabbitmq -u pgfanout -p "$RABBITMQ_PASSWORD" "$@"; }
until [ "$(admin -f bash list nodes name running | tr ' ' '\n' | grep -c .)" -ge 3 ]; do sleep 2; done
for q in $QUEUES; do
  admin declare queue name="$q" durable=true \
    arguments='{"x-queue-type": "quorum", "x-single-active-consumer": true}'
  admin declare queue name="$q.dead" durable=true arguments='{"x-queue-type": "quorum"}'
  admin declare binding source=pgfanout destination="$q" destination_type=queue routing_key='#'
done
