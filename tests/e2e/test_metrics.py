"""``/metrics`` over a live server, against the alert rules of docs/deploy/prometheus-alerts.yml.

Every metric a rule's expression uses must be exported (a rule on a missing metric never
fires); the HTTP figures are labelled by route template, never by raw path; the figures
of the other processes (projections, relay) come from shared state.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.e2e.harness import ROOT, Runtime, auth, connected, wait_for

pytestmark = pytest.mark.e2e

RULES = ROOT / "docs" / "deploy" / "prometheus-alerts.yml"
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are no function
    (followed by ``(``), keyword, label name (inside ``{}`` or a ``by (…)`` clause),
    string or duration."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # grouping clauses
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = match.group()
        following = text[match.end() :].lstrip()
        if name.lower() in KEYWORDS or following.startswith("("):
            continue
        names.add(name)
    return names


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def exported(scrape: str) -> set[str]:
    """Every sample name the scrape may hold: each family's name with its type's suffixes."""
    names = set()
    for line in scrape.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            base = family.removesuffix("_total") if kind == "counter" else family
            names.add(family)
            names.update(base + suffix for suffix in SUFFIXES.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def sample(scrape: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels`` (in any order)."""
    for line in scrape.splitlines():
        match = re.fullmatch(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if found == labels:
            return float(match.group(3))
    return None


def test_rule_file_is_a_prometheus_rule_file() -> None:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    seen = set()
    for group in document["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
            assert rule["alert"] not in seen and re.fullmatch(r"[A-Za-z0-9_]+", rule["alert"])
            seen.add(rule["alert"])
            assert rule["expr"].count("(") == rule["expr"].count(")")
            assert re.fullmatch(r"\d+[smh]", rule["for"])
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"]
    assert metric_names('sum by (q) (rate(x_total{s=~"5.."}[5m])) / y > 0 and on(q) z') == {
        "x_total",
        "y",
        "z",
    }


def test_every_metric_the_alert_rules_use_is_exported(runtime: Runtime) -> None:
    http = runtime.http
    sent = http.post(
        "/api/messages/direct",
        json={"recipientId": "metrics-r", "content": "metrics probe"},
        headers=auth("metrics-s"),
    )
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["message"]["id"]
    runtime.wait_done("metrics-s", message_id)
    socket = connected(runtime.ws("metrics-r"))
    try:
        scrape = http.get("/metrics")
        assert scrape.status_code == 200
        names = exported(scrape.text)
        used = {name for rule in rules() for name in metric_names(rule["expr"])}
        assert len(used) >= 9
        assert used <= names, f"rules use metrics /metrics lacks: {sorted(used - names)}"

        text = scrape.text
        # By route template and status; the message id of the path is no label.
        route = "/api/messages/{id}"
        assert sample(text, "courier_http_requests_total", route=route, method="GET", status="200")
        assert message_id not in text
        assert sample(text, "courier_websocket_connections") == 1.0
        assert sample(text, "courier_relay_leader") == 1.0
        assert sample(text, "courier_store_gate_open") == 1.0
        head = sample(text, "courier_log_head_position")
        assert head is not None and head > 0
        # The send went through this process's group commit.
        commands = sample(text, "courier_group_commit_commands_total")
        assert commands is not None and commands >= 1
        assert sample(text, "courier_group_commit_conflicts_total") is not None
    finally:
        socket.close()

    def caught_up() -> str | None:
        text = http.get("/metrics").text
        lags = [
            sample(text, "courier_projection_lag_events", projection=name)
            for name in ("messages", "search", "audit", "audit_chain", "queue_metrics")
        ]
        relay = sample(text, "courier_relay_lag_events")
        return text if lags == [0.0] * 5 and relay == 0.0 else None

    text = wait_for(caught_up, 30, "every projection and the relay to reach the log's head")
    assert sample(text, "courier_projection_position", projection="audit_chain") == sample(
        text, "courier_log_head_position"
    )
    for queue in ("MESSAGE_DELIVERY", "MESSAGE_INDEXING"):
        assert sample(text, "courier_queue_oldest_waiting_seconds", queue=queue) == 0.0
    unmatched = http.get("/no/such/path-zq")
    assert unmatched.status_code == 404
    text = http.get("/metrics").text
    assert sample(
        text, "courier_http_requests_total", route="unmatched", method="GET", status="404"
    )
    assert "path-zq" not in text


def test_figures_of_other_processes_come_from_shared_state(services: Runtime) -> None:
    """The API reports a job that waits for a stopped worker, and no leader once the
    relay is gone, from the database alone."""
    http = services.http
    services.processes["worker"].stop()
    sent = http.post(
        "/api/messages/direct",
        json={"recipientId": "metrics-r", "content": "waits for a worker"},
        headers=auth("metrics-s"),
    )
    assert sent.status_code == 202, sent.text

    def waiting_age() -> float | None:
        text = http.get("/metrics").text
        age = sample(text, "courier_queue_oldest_waiting_seconds", queue="MESSAGE_DELIVERY")
        return age if age is not None and age >= 0.5 else None

    wait_for(waiting_age, 30, "the undelivered job to show as waiting")
    assert sample(http.get("/metrics").text, "courier_relay_leader") == 1.0
    services.processes["relay"].stop()
    wait_for(
        lambda: sample(http.get("/metrics").text, "courier_relay_leader") == 0.0,
        30,
        "the relay's leader lock to be released",
    )
