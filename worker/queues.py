"""Queue and task names: what publishers and workers agree on. Anything may import this;
it builds nothing and touches nothing."""

from __future__ import annotations

# The two lanes of sends (docs/design.md, "Lanes"): a send whose caller waits on HTTP goes
# to the interactive queue; bulk sends (direct enqueues, `Prefer: respond-async`) to the
# send queue, the name every publisher used before lanes existed. Every worker takes from
# the interactive queue first (worker.lanes).
INTERACTIVE_SEND_QUEUE = "securesend.send.interactive"
SEND_QUEUE = "securesend.send"
MAIL_QUEUE = "securesend.mail"
SEND_QUEUES = (INTERACTIVE_SEND_QUEUE, SEND_QUEUE)
# What `securesend worker` consumes unless told otherwise, in the order it takes them.
ALL_QUEUES = (MAIL_QUEUE, INTERACTIVE_SEND_QUEUE, SEND_QUEUE)

SEND_TASK = "securesend.send_message"
DRAIN_TASK = "securesend.mail.drain"
# Delivers webhook events: the outbox's second channel, on the mail queue.
WEBHOOK_DRAIN_TASK = "securesend.webhooks.drain"
SWEEP_TASK = "securesend.mail.sweep"
JOBS_SWEEP_TASK = "securesend.jobs.sweep"
PRUNE_TASK = "securesend.prune"
PING_TASK = "securesend.ping"
