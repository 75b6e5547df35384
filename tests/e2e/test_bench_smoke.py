"""`courier bench --quick` runs end to end and reports every figure.

A smoke check that the harness works: it asserts counts and the shape of the report,
never a timing — figures on a shared 2-core machine mean nothing in a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.bench]

MESSAGES = 500
ROLES = ("serve", "relay", "worker", "projections")


@pytest.mark.timeout(280)
def test_quick_bench_reports_every_figure(tmp_path: Path, pg_dsn: str, redis_url: str) -> None:
    out = tmp_path / "bench"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "interfaces.cli",
            "bench",
            "--quick",
            "--out",
            str(out),
            "--database-url",
            pg_dsn,
            "--broker-url",
            redis_url,
            "--floor-seconds",
            "0.5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=270,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert (out / "latest.md").exists()
    report = json.loads((out / "latest.json").read_text())

    w1 = report["w1"]
    assert w1["workload"]["messages"] == MESSAGES
    acceptance = w1["acceptance"]
    accepted = _accepted(acceptance, MESSAGES)
    _latencies(acceptance)

    life = w1["lifecycle"]
    assert life["accepted"] == life["done"] == accepted and life["failed"] == 0
    assert life["allTerminal"] is True
    assert life["timeToTerminal"]["messages"] == accepted
    assert life["throughputPerS"] > 0
    stages = {name: figures["messages"] for name, figures in life["stages"].items()}
    assert set(stages) == {"encrypted", "delivered", "notified", "indexed"}
    assert stages["delivered"] == stages["notified"] == stages["indexed"] == accepted
    assert MESSAGES // 2 - (MESSAGES - accepted) <= stages["encrypted"] <= MESSAGES // 2
    for figures in life["stages"].values():
        _latencies(figures)

    # Per message: Created, Delivered, Notified, Indexed, and two more when encrypted.
    assert w1["events"]["count"] >= 5 * accepted and w1["events"]["perS"] > 0
    by_queue = w1["jobs"]["byQueue"]
    assert by_queue["MESSAGE_ENCRYPTION"] >= stages["encrypted"]
    assert by_queue["BATCH_MESSAGE_SENDING"] >= MESSAGES // 5 - (MESSAGES - accepted)
    for queue in ("MESSAGE_DELIVERY", "MESSAGE_NOTIFICATION", "MESSAGE_INDEXING"):
        assert by_queue[queue] >= accepted
    assert w1["jobs"]["perS"] > 0

    [step] = w1["openLoop"]
    assert step["offeredPerS"] == 100
    _accepted(step, 100)
    assert step["allTerminal"] is True
    _latencies(step)
    assert step["achievedSendPerS"] > 0 and step["sendLagP99Ms"] is not None
    assert 0 <= step["queuedForConnection"] <= step["requests"]
    # The load generator reports its own CPU beside every load it drives.
    for load in (acceptance, step, report["floors"]["starlette"]):
        assert load["generatorCpuS"] >= 0 and load["generatorCpuMsPerRequest"] is not None
    assert report["meta"]["loadGenerator"]

    for role in (*ROLES, "bench"):
        assert report["processes"][role]["peakRssMb"] > 0
    for role in ROLES:
        assert role in w1["cpu"]["whole"]["processes"]

    floors = report["floors"]
    assert floors["postgresInsert"]["txPerS"] > 0
    assert floors["kombu"]["consumed"] == floors["kombu"]["messages"]
    assert floors["kombu"]["roundTripPerS"] > 0
    assert floors["starlette"]["ok"] == floors["starlette"]["requests"]
    assert floors["notificationLog"]["events"] >= w1["events"]["count"]
    assert all(value is not None for value in report["ratios"].values())
    assert report["meta"]["commit"] and report["meta"]["machine"]["cores"] >= 1
    if (out / "latest.png").exists():
        assert (out / "latest.png").stat().st_size > 10_000
    else:
        assert "matplotlib is not installed" in done.stdout


def _accepted(load: dict[str, Any], sent: int) -> int:
    """Every send answered 202, bar a rare connection dropped under load (never a 4xx/5xx)."""
    assert load["requests"] == sent and load["ok"] + load["errors"] == sent
    assert load["statuses"].get("202") == load["ok"]
    assert all(not status.isdigit() for status in load["statuses"] if status != "202")
    assert load["errors"] <= sent // 100, load["statuses"]
    return int(load["ok"])


def _latencies(figures: dict[str, float]) -> None:
    p50, p95, p99 = figures.get("p50Ms"), figures.get("p95Ms", 0.0), figures["p99Ms"]
    assert p50 is not None and 0 <= p50 <= (p95 or p99) <= p99
