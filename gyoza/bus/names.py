"""Bucket, stream and subject names: a documented interface for operators (see broker/README.md)."""

import re

_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")

DEFINITIONS_BUCKET = "gyoza_definitions"
RUNS_BUCKET = "gyoza_runs"
WORKERS_BUCKET = "gyoza_workers"
LEASES_BUCKET = "gyoza_leases"
IDEMPOTENCY_BUCKET = "gyoza_idempotency"
# Scoped API keys (docs/keys.md): <key id> = ApiKeyRecord, hashes only.
KEYS_BUCKET = "gyoza_keys"
# Secrets (docs/secrets.md): secret.<name> = SecretRecord, registry.<escaped host> = RegistryCredential.
SECRETS_BUCKET = "gyoza_secrets"
LOGS_BUCKET = "gyoza_logs"

RUN_REQUESTS_STREAM = "GYOZA_RUN_REQUESTS"
RUN_REQUESTED_SUBJECT = "gyoza.runs.requested"
SCHEDULER_CONSUMER = "scheduler"
# Core NATS: another replica changed a worker record (drain); the leader re-reads it.
WORKER_CHANGED_SUBJECT = "gyoza.scheduler.worker_changed"
TOPICS_STREAM = "GYOZA_TOPICS"
# Core NATS queue group of every server replica answering workers' event reports (each report handled once).
SERVERS_QUEUE = "gyoza-servers"


def topic_subject(topic: str) -> str:
    return f"gyoza.topics.{topic}"


def heartbeat_subject(worker_id: str) -> str:
    return f"gyoza.workers.{worker_id}.heartbeat"


def assignments_subject(worker_id: str) -> str:
    return f"gyoza.workers.{worker_id}.assignments"


def events_subject(worker_id: str) -> str:
    """A NATS-mode worker's event reports (request/reply), answered by any server replica."""
    return f"gyoza.workers.{worker_id}.events"


# Live log lines (issue 11): the stream, its subjects, and a NATS-mode worker's shipments (request/reply, answered
# by any server replica in SERVERS_QUEUE).
LOGS_STREAM = "GYOZA_LOGS"


def log_subject(run_id: str, attempt: int) -> str:
    return f"gyoza.logs.{run_id}.{attempt}"


def log_reports_subject(worker_id: str) -> str:
    return f"gyoza.workers.{worker_id}.logs"


def run_log_subjects(run_id: str) -> str:
    """Every attempt's live log lines of one run."""
    return f"gyoza.logs.{run_id}.*"


def key_token(text: str) -> str:
    """``text`` as one KV key token: every character a token cannot hold written as ``=XX`` (``1.2`` -> ``1=2E2``)."""
    return _UNSAFE_KEY_CHARS.sub(lambda m: f"={ord(m.group()):02X}", text)
