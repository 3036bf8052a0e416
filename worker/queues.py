"""Queue and task names: what publishers and workers agree on. Anything may import this;
it builds nothing and touches nothing."""

from __future__ import annotations

SEND_QUEUE = "securesend.send"
MAIL_QUEUE = "securesend.mail"

SEND_TASK = "securesend.send_message"
DRAIN_TASK = "securesend.mail.drain"
SWEEP_TASK = "securesend.mail.sweep"
JOBS_SWEEP_TASK = "securesend.jobs.sweep"
PRUNE_TASK = "securesend.prune"
PING_TASK = "securesend.ping"
