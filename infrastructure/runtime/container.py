"""Everything one process uses, and the order in which its threads start and stop."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, text

from application.messaging import Messaging
from application.ports import Crypto
from infrastructure.broker import Broker
from infrastructure.chain import ChainKeeper
from infrastructure.checkpoints import CheckpointSchedule
from infrastructure.contacts import SqlContactBook
from infrastructure.delayed import DelayedJobs
from infrastructure.groupcommit import GroupCommitter
from infrastructure.jobruns import JobRuns
from infrastructure.jobstats import JobStats
from infrastructure.presence import LocalPresence
from infrastructure.ratelimit import RateLimiter
from infrastructure.runtime.queue_monitor import QueueMonitor
from infrastructure.runtime.relay import Relay
from infrastructure.settings import Settings
from infrastructure.storage.eventlog import ApplicationLog
from infrastructure.storegate import StoreGate
from infrastructure.tickets import LocalTickets, Tickets
from infrastructure.worker import Workers
from projections.audit_queries import AuditQueriesSQL
from projections.messages import MessageQueriesSQL
from projections.runner import Following, ViewRunner

log = logging.getLogger("courier")


@dataclass
class Container:
    """Everything one process uses, built once from settings."""

    settings: Settings
    role: str
    messaging: Messaging
    crypto: Crypto  # the one the application seals with: cipher, master keyring, vault
    engine: Engine
    queries: MessageQueriesSQL
    broker: Broker
    presence: LocalPresence
    stats: JobStats
    delayed: DelayedJobs
    runs: JobRuns
    monitor: QueueMonitor
    audit: AuditQueriesSQL
    chain: ChainKeeper
    contacts: SqlContactBook
    redis: Any = None
    relay: Relay | None = None
    workers: Workers | None = None
    projections: list[ViewRunner] = field(default_factory=list)
    committer: GroupCommitter | None = None
    limiter: RateLimiter | None = None
    tickets: Tickets = field(default_factory=LocalTickets)
    store_gate: StoreGate | None = None
    checkpoints: CheckpointSchedule | None = None

    @property
    def event_log(self) -> ApplicationLog:
        return ApplicationLog(self.messaging)

    def readiness(self) -> dict[str, bool]:
        checks: dict[str, bool] = {}
        try:
            self.messaging.recorder.max_notification_id()
            checks["eventStore"] = True
        except Exception:
            checks["eventStore"] = False
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["readStore"] = True
        except Exception:
            checks["readStore"] = False
        if not self.settings.broker_url.startswith("memory"):
            checks["broker"] = self.broker.ping()
        if self.redis is not None:
            try:
                checks["redis"] = bool(self.redis.ping())
            except Exception:
                checks["redis"] = False
        return checks

    def projection_followers(self) -> list[Following]:
        """The threads that feed the projections (one, shared, unless built otherwise)."""
        return list(dict.fromkeys(runner.follower for runner in self.projections))

    def start(self) -> None:
        for follower in self.projection_followers():
            follower.start()
        if self.workers is not None:
            self.workers.start()
        if self.relay is not None:
            self.relay.start()
        if self.checkpoints is not None:
            self.checkpoints.start()
        log.info(
            "courier %s started (%s, broker %s)",
            self.role,
            "embedded" if self.settings.embedded else "services",
            self.settings.broker_url.split("://")[0],
        )

    def stop(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.stop()
        if self.relay is not None:
            self.relay.stop()
        if self.workers is not None:
            self.workers.stop()
        for follower in self.projection_followers():
            follower.stop()
        if self.relay is not None:
            self.relay.join(timeout=5)
        for follower in self.projection_followers():
            follower.join(timeout=5)
        self.broker.close()
        if self.redis is not None:
            self.redis.close()
        if self.committer is not None:
            self.committer.close()
        self.messaging.close()
        self.engine.dispose()
