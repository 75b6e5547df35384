""".env.example documents every setting the model reads, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from application.jobs import QUEUES
from infrastructure.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
# Documented beside the settings, read by others: uvicorn, and `courier serve`'s option.
READ_ELSEWHERE = {"FORWARDED_ALLOW_IPS", "HTTP_ACCESS_LOG"}
# Every queue has the same settings; the example spells out one queue's.
EXAMPLE_QUEUE = "MESSAGE_DELIVERY"


def documented() -> set[str]:
    return set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", EXAMPLE.read_text(), re.MULTILINE))


def test_every_setting_of_the_model_is_in_the_example_and_every_example_in_the_model() -> None:
    read = Settings.variables()
    per_queue = {name for name in read if name.startswith("QUEUE_") and "_HEALTH_" not in name}
    one_queue = {name for name in per_queue if name.startswith(f"QUEUE_{EXAMPLE_QUEUE}_")}
    assert len(one_queue) * len(QUEUES) == len(per_queue)
    assert documented() - READ_ELSEWHERE == (read - per_queue) | one_queue


def test_the_example_names_every_queue() -> None:
    text = EXAMPLE.read_text()
    assert all(queue in text for queue in QUEUES)
