"""Bucket, stream and subject names: a documented interface for operators (see broker/README.md)."""

DEFINITIONS_BUCKET = "gyoza_definitions"
RUNS_BUCKET = "gyoza_runs"
WORKERS_BUCKET = "gyoza_workers"
LEASES_BUCKET = "gyoza_leases"
IDEMPOTENCY_BUCKET = "gyoza_idempotency"
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
