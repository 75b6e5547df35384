"""The one place that builds everything, for either runtime (docs/DEVELOPMENT.md).

Nothing connects at import: ``build`` opens the stores (``infrastructure.runtime.stores``) and makes
the objects of a process's role; ``Container.start`` (``infrastructure.runtime.container``) starts
its threads.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from sqlalchemy import Engine

from application.batches import BatchProcessor
from application.jobs import QueueSettings
from application.loading import Loader
from application.messaging import Messaging
from application.policies import JOB_EVENTS
from application.ports import Crypto
from application.processing import Processor
from application.retention import Retention
from infrastructure import eventstore
from infrastructure.blindindex import HmacBlindIndex
from infrastructure.broker import Broker
from infrastructure.chain import ChainKeeper
from infrastructure.checkpoints import CheckpointSchedule, load_public_key, signing_key
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
from infrastructure.ratelimit import LocalWindows, RateLimiter, RedisWindows, Rule, Windows
from infrastructure.runtime.container import Container
from infrastructure.runtime.queue_monitor import QueueMonitor
from infrastructure.runtime.relay import Relay
from infrastructure.runtime.stores import make_engine, migrate, open_messaging
from infrastructure.secretfiles import with_embedded_secrets
from infrastructure.settings import Settings, load
from infrastructure.storage.eventlog import ApplicationLog, SelectiveLog
from infrastructure.storegate import guard
from infrastructure.tickets import LocalTickets, RedisTickets
from infrastructure.vault import SqlKeyVault
from infrastructure.worker import BatchEngine, JobRunner, QueueConsumer, Workers
from projections.audit_queries import AuditQueriesSQL
from projections.catalog import PROJECTIONS as VIEWS
from projections.messages import MessageQueriesSQL
from projections.shared import SharedFollower

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
        crypto=crypto,
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
            crypto,
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
