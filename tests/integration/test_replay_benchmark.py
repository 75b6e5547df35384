"""A tiny run of benchmarks/replay.py, so that the script keeps working."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.replay import main
from tests.conftest import PG_DSN

pytestmark = pytest.mark.services


def test_the_replay_benchmark_runs_and_reports_every_step(pg_dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    assert main(["--events", "700", "--database-url", PG_DSN, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["events"] >= 700 and result["floorEventsPerSecond"] > 0
    steps = result["steps"]
    assert {"replay messages", "replay audit", "build the audit chain", "audit verify"} <= set(
        steps
    )
    assert all(step["events"] >= 700 for step in steps.values())
