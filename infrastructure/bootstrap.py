"""The one place that builds everything, for either runtime (docs/DEVELOPMENT.md).

Nothing connects at import: ``build`` makes the objects, ``Container.start`` starts
the threads that the process's role asks for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from eventsourcing import persistence
from sqlalchemy import Engine, create_engine, event, text

from application.batches import BatchProcessor
from application.jobs import QueueSettings
from application.loading import Loader
from application.messaging import Crypto, Messaging
from application.policies import JOB_EVENTS
from application.processing import Processor
from application.retention import Retention
from infrastructure import eventstore
from infrastructure.blindindex import HmacBlindIndex
from infrastructure.broker import Broker
from infrastructure.chain import ChainKeeper, CheckpointSchedule, load_public_key, signing_key
from infrastructure.contacts import SqlContactBook, SqlSendLog
from infrastructure.crypto import AesGcmCipher, MasterKeyring
from infrastructure.delayed import DelayedJobs
from infrastructure.eventreader import event_reader
from infrastructure.faults import FaultInjector
from infrastructure.groupcommit import GroupCommitter
from infrastructure.jobruns import JobRuns
from infrastructure.jobstats import JobStats
from infrastructure.notifiers import ChannelNotifier, FlagIndexer, channels_from
from infrastructure.presence import LocalPresence, RedisPresence
from infrastructure.queues import QueueMonitor
from infrastructure.ratelimit import LocalWindows, RateLimiter, RedisWindows, Rule, Windows
from infrastructure.relay import Relay, lock_key
from infrastructure.secretfiles import with_embedded_secrets
from infrastructure.settings import Settings, eventstore_env, load
from infrastructure.storegate import StoreGate, guard
from infrastructure.tickets import LocalTickets, RedisTickets, Tickets
from infrastructure.vault import SqlKeyVault
from infrastructure.worker import BatchEngine, JobRunner, QueueConsumer, Workers
from projections.audit_queries import AuditQueriesSQL
from projections.catalog import PROJECTIONS as VIEWS
from projections.messages import MessageQueriesSQL
from projections.runner import ApplicationLog, Following, ProjectionRunner, SelectiveLog
from projections.shared import SharedFollower

log = logging.getLogger("courier")

SERVE = "serve"
WORKER = "worker"
RELAY = "relay"
PROJECTIONS = "projections"
ALL = "all"  # every role in one process (the embedded default's `serve`, tests)
TOOL = "tool"  # CLI commands that only read or write once


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """A process's settings, read at its start (from ``env``, else its environment); on
    the embedded default, with the secrets it keeps in its data dir (made on first start)."""
    return with_embedded_secrets(load(env))


def make_engine(settings: Settings) -> Engine:
    url = settings.sqlalchemy_url()
    if settings.is_postgres:
        schema = settings.postgres_schema
        # A writer waiting on a stuck lock holder, or a transaction left open by a paused
        # process, is cut off within seconds instead of freezing every writer behind it.
        # The URL's other query parameters (sslmode, …) reach psycopg through the URL.
        options = [
            settings.database_params().get("options", ""),
            f"-c lock_timeout={settings.lock_timeout}s",
            f"-c idle_in_transaction_session_timeout={settings.idle_in_transaction_timeout}s",
            f"-csearch_path={schema}" if schema else "",
        ]
        return create_engine(
            url,
            pool_size=3,
            max_overflow=7,
            pool_pre_ping=True,
            pool_timeout=10,
            connect_args={"connect_timeout": 5, "options": " ".join(o for o in options if o)},
        )
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Deleted rows (a shredded message's wrapped keys) are overwritten, not left in
        # free pages of the file.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    return engine


def migrate(settings: Settings, engine: Engine) -> None:
    """Apply pending read-side migrations (one process at a time on Postgres)."""
    from infrastructure import migrate as migrations

    schema = settings.postgres_schema
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            # Processes started together wait here for the one that migrates, however long
            # it takes: this wait is neither stuck nor idle, unlike what the timeouts cut.
            conn.execute(text("SET lock_timeout = 0"))
            conn.execute(text("SET idle_in_transaction_session_timeout = 0"))
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key("migrate", schema)})
            conn.commit()  # the lock is the session's; no transaction is left open
            try:
                migrations.upgrade(
                    settings.sqlalchemy_url(),
                    schema=schema,
                    app_role=settings.database_app_role,
                )
            finally:
                conn.execute(
                    text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key("migrate", schema)}
                )
                conn.execute(text("RESET lock_timeout"))
                conn.execute(text("RESET idle_in_transaction_session_timeout"))
                conn.commit()
    else:
        migrations.upgrade(settings.sqlalchemy_url())


@dataclass
class Container:
    """Everything one process uses, built once from settings."""

    settings: Settings
    role: str
    messaging: Messaging
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
    projections: list[ProjectionRunner] = field(default_factory=list)
    hub: Any = None
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


def open_messaging(crypto: Crypto, settings: Settings, attempts: int = 5) -> Messaging:
    """The application on its event store, made when missing.

    Processes started together (API, relay, worker, projections) all ask PostgreSQL to
    create the event tables; ``CREATE TABLE IF NOT EXISTS`` run at the same moment can
    fail in the catalog for all but one of them. The tables then exist: ask again.
    """
    env = eventstore_env(settings)
    if settings.is_postgres:
        env.setdefault("APPLICATION_RECORDER_TOPIC", eventstore.TOPIC)
    for attempt in range(1, attempts + 1):
        try:
            return Messaging(crypto=crypto, env=env)
        except (
            persistence.IntegrityError,  # duplicate key in pg_type
            persistence.InternalError,  # tuple concurrently updated
            persistence.ProgrammingError,  # relation already exists
        ) as error:
            if attempt == attempts:
                raise
            log.info("event store tables were being created elsewhere (%s); again", error)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def prune_job_records(container: Container, older_than_seconds: float) -> int:
    """What the leading relay forgets once an hour: attempts (``job_runs``) and the
    ``queue_metrics`` view's rows of jobs completed longer ago than the retention."""
    pruned = container.runs.prune(older_than_seconds)
    return pruned + container.monitor.log.prune(time.time() - older_than_seconds)


def consumed_queues(
    settings: Settings, names: Sequence[str] | None, concurrency: int | None
) -> list[QueueSettings]:
    """The queues a worker consumes, with the concurrency it was told to use."""
    unknown = [n for n in names or () if n not in settings.queues]
    if unknown:
        raise ValueError(
            f"unknown queue(s): {', '.join(unknown)}; the queues are {', '.join(settings.queues)}"
        )
    chosen = (
        [settings.queues[n] for n in dict.fromkeys(names)] if names else settings.queues.values()
    )
    if concurrency is None:
        return list(chosen)
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    return [replace(q, concurrency=concurrency) for q in chosen]


def chain_keeper(settings: Settings, messaging: Messaging, engine: Engine) -> ChainKeeper:
    """The audit chain's keeper; it trusts ``AUDIT_PUBLIC_KEY``, else the signing key."""
    public = settings.audit_public_key
    return ChainKeeper(
        messaging.recorder,
        engine,
        signing_key(settings),
        mapper=messaging.mapper,
        trusted=load_public_key(public) if public else None,
        full_every=settings.audit_verify_full_seconds,
    )


def rate_limiter(settings: Settings) -> RateLimiter:
    """Per-user and per-address limits, counted in Redis when ``REDIS_URL`` is set."""
    windows: Windows = LocalWindows()
    if settings.redis_url:
        import redis.asyncio

        windows = RedisWindows(
            redis.asyncio.Redis.from_url(
                settings.redis_url, socket_timeout=2, socket_connect_timeout=2
            )
        )
    limits = settings.limits
    return RateLimiter(
        windows,
        per_user=Rule(limits.rate_per_user, limits.rate_window),
        per_address=Rule(limits.rate_per_address, limits.rate_window),
    )


def build(
    settings: Settings,
    role: str = SERVE,
    *,
    apply_migrations: bool = True,
    worker_queues: Sequence[str] | None = None,
    worker_concurrency: int | None = None,
) -> Container:
    """Build a process of the given role. Embedded ``serve`` hosts every role at once.

    A worker consumes ``worker_queues`` (default: all six), each at
    ``worker_concurrency`` when given, else at its queue's setting.
    """
    settings = with_embedded_secrets(settings)
    engine = make_engine(settings)
    if apply_migrations:
        migrate(settings, engine)
    vault = SqlKeyVault(engine)
    crypto = Crypto(
        cipher=AesGcmCipher(),
        keyring=MasterKeyring.from_spec(settings.master_key_spec()),
        vault=vault,
    )
    crypto.blind_index = HmacBlindIndex(engine, crypto.keyring)
    messaging = open_messaging(crypto, settings)
    messaging.require_encryption = settings.require_encryption
    # Fail fast (503) while PostgreSQL is down.
    gate = guard(messaging.recorder) if settings.is_postgres else None
    # On PostgreSQL a send's key-vault rows can ride along with its events.
    put = messaging.events.put
    committer = GroupCommitter(eventstore.with_keys(put) if settings.is_postgres else put)
    messaging.record_with(committer.submit)
    redis_client = None
    if settings.redis_url:
        import redis

        redis_client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=5
        )
    presence: LocalPresence = (
        RedisPresence(redis_client) if redis_client is not None else LocalPresence()
    )
    broker = Broker(settings.broker_url, settings.visibility_timeout)
    stats = JobStats()
    delayed = DelayedJobs(engine)
    runs = JobRuns(engine)
    container = Container(
        settings=settings,
        role=role,
        messaging=messaging,
        engine=engine,
        queries=MessageQueriesSQL(engine, crypto.blind_index),
        contacts=SqlContactBook(engine),
        broker=broker,
        presence=presence,
        stats=stats,
        delayed=delayed,
        runs=runs,
        monitor=QueueMonitor(settings.queues, broker, delayed, runs, engine, settings.health),
        audit=AuditQueriesSQL(engine),
        chain=chain_keeper(settings, messaging, engine),
        redis=redis_client,
        committer=committer,
        tickets=RedisTickets(redis_client) if redis_client is not None else LocalTickets(),
        store_gate=gate,
    )
    if role in (SERVE, ALL):
        container.limiter = rate_limiter(settings)
    everything = role == ALL or (settings.embedded and role == SERVE)
    log_ = ApplicationLog(messaging)
    if everything or role == PROJECTIONS:
        shared = SharedFollower(log_, engine, poll_interval=settings.poll_interval)
        for projection in VIEWS:
            container.projections.append(shared.add(projection.view(), raw=projection.raw))
        messaging.on_saved(shared.wake)
        if container.chain.key is not None and settings.audit_checkpoint_seconds > 0:
            every = settings.audit_checkpoint_seconds
            container.checkpoints = CheckpointSchedule(container.chain, every)
    if everything or role == WORKER:
        notifier = ChannelNotifier(
            container.contacts, SqlSendLog(engine), channels_from(settings.notifications)
        )
        retention = Retention(messaging, container.audit, settings.retention_days)
        processor = Processor(
            messaging,
            presence,
            notifier,
            FlagIndexer(),
            retention,
            notify_preview=settings.notifications.preview,
        )
        batches = BatchProcessor(processor, Loader(messaging, event_reader(messaging.recorder)))
        job_runner = JobRunner(
            processor,
            delayed,
            settings.queues,
            FaultInjector(settings.fault_inject),
            stats,
            runs,
            batches,
        )
        batch_engine = BatchEngine(job_runner)
        container.workers = Workers(
            [
                QueueConsumer(q, broker, job_runner, batch_engine)
                for q in consumed_queues(settings, worker_queues, worker_concurrency)
            ],
            batch_engine,
        )
    if everything or role == RELAY:
        container.relay = Relay(
            messaging,
            SelectiveLog(log_, JOB_EVENTS),
            engine,
            broker,
            delayed,
            poll_interval=settings.poll_interval,
            reconcile_after=settings.reconcile_after,
            prune=lambda: prune_job_records(container, settings.job_runs_retention_days * 86400),
            schema=settings.postgres_schema,
            cleanup_every=settings.retention_interval if settings.retention_days > 0 else 0.0,
        )
        messaging.on_saved(container.relay.wake)
    return container
