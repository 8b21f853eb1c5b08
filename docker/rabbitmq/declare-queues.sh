#!/bin/sh
# One-shot of docker-compose.cluster.yml: once the three nodes run, declares each replica's
# queue and dead-letter queue as quorum queues (a member on every node) with the arguments
# pgfanout-listener --queue-type quorum declares them with, and binds the queues to the
# exchange, before the publisher ships anything. Queues: $QUEUES (space-separated).
# rabbitmqadmin reads the password of user pgfanout (the amqp_password secret) from a
# configuration file, so that it is on no command line.
set -eu
conf=$(mktemp)
trap 'rm -f "$conf"' EXIT
printf '[pgfanout]\nhostname = rabbitmq\nusername = pgfanout\npassword = %s\n' \
  "$(cat /run/secrets/amqp_password)" >"$conf"
admin() { rabbitmqadmin -c "$conf" -N pgfanout "$@"; }
# The nodes that run (column "running" True), one per line after the header.
until [ "$(admin -f tsv list nodes name running | grep -c 'True')" -ge 3 ]; do sleep 2; done
for q in $QUEUES; do
  admin declare queue name="$q" durable=true \
    arguments='{"x-queue-type": "quorum", "x-single-active-consumer": true}'
  admin declare queue name="$q.dead" durable=true arguments='{"x-queue-type": "quorum"}'
  admin declare binding source=pgfanout destination="$q" destination_type=queue routing_key='#'
done
