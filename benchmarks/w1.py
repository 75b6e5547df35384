"""Workload W1: 80% direct, 20% to groups of 20, half of each encrypted.

Every send asks for notification and indexing. A pool of users (one RSA-4096 key pair
registered for all of them: generating keys is slow and not what is measured) and a set
of group conversations are made once; each message then picks its sender and target
from them with a fixed seed, so two runs send the same workload.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from benchmarks.load import Call

DIRECT = "direct"
GROUP = "group"
WARDS = ("A&E", "ICU", "Maternity", "Oncology", "Paediatrics", "Renal")


@dataclass(frozen=True)
class Workload:
    messages: int = 10_000
    group_share: float = 0.2
    encrypted_share: float = 0.5
    group_size: int = 20  # participants of a group conversation, sender included
    users: int = 40
    groups: int = 10
    tenant: str = "bench"
    seed: int = 7


@dataclass(frozen=True)
class Planned:
    """One send of the plan, before users and conversations exist."""

    kind: str
    encrypted: bool
    sender: int  # index into the user pool
    target: int  # recipient's user index (direct) or group index (group)


@dataclass
class Population:
    """The users (with their tokens) and group conversations of a run."""

    tenant: str
    users: list[str]
    tokens: dict[str, str]
    groups: list[tuple[str, list[str]]] = field(default_factory=list)  # (id, members)

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}


def plan(workload: Workload, count: int, seed_offset: int = 0) -> list[Planned]:
    """``count`` sends in W1's proportions (exact, then shuffled)."""
    rng = random.Random(workload.seed + seed_offset)
    groups = round(count * workload.group_share)
    kinds = [GROUP] * groups + [DIRECT] * (count - groups)
    encrypted = [i % 2 == 0 for i in range(groups)] + [i % 2 == 0 for i in range(count - groups)]
    order = list(range(count))
    rng.shuffle(order)
    planned = []
    for i in order:
        if kinds[i] == GROUP:
            planned.append(Planned(GROUP, encrypted[i], -1, rng.randrange(workload.groups)))
        else:
            sender, recipient = rng.sample(range(workload.users), 2)
            planned.append(Planned(DIRECT, encrypted[i], sender, recipient))
    return planned


# A soak may outlast an hour: the benchmark's own servers accept tokens of this lifetime
# (runtime.py sets JWT_MAX_LIFETIME_SECONDS to it).
TOKEN_LIFETIME_SECONDS = 12 * 3600


def mint(secret: str, user: str, tenant: str, seconds: int = TOKEN_LIFETIME_SECONDS) -> str:
    now = int(time.time())
    claims = {
        "sub": user,
        "tenant": tenant,
        "roles": ["user"],
        "iat": now,
        "exp": now + seconds,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def public_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def populate(client: httpx.AsyncClient, workload: Workload, secret: str) -> Population:
    """Register a key for every user and start the group conversations."""
    rng = random.Random(workload.seed)
    users = [f"clinician-{i:03d}" for i in range(workload.users)]
    population = Population(
        workload.tenant, users, {u: mint(secret, u, workload.tenant) for u in users}
    )
    pem = await asyncio.to_thread(public_key_pem)

    async def register(user: str) -> None:
        answer = await client.put(
            "/api/keys/me", json={"publicKeyPem": pem}, headers=population.headers(user)
        )
        _expect(answer, 200, f"registering {user}'s key")

    async def start_group(number: int) -> tuple[str, list[str]]:
        members = rng.sample(users, workload.group_size)
        answer = await client.post(
            "/api/conversations",
            json={"type": GROUP, "participantIds": members[1:], "title": f"W1 group {number}"},
            headers=population.headers(members[0]),
        )
        _expect(answer, 201, "starting a group conversation")
        body: dict[str, Any] = answer.json()
        return str(body["id"]), [str(p) for p in body["participantIds"]]

    await asyncio.gather(*(register(u) for u in users))
    population.groups = [await start_group(n) for n in range(workload.groups)]
    return population


def calls(planned: list[Planned], population: Population, first: int = 0) -> list[Call]:
    """The HTTP requests of a plan (``first`` numbers the contents across phases)."""
    rng = random.Random(first)
    result = []
    for n, send in enumerate(planned, start=first):
        body: dict[str, Any] = {
            "content": _content(n),
            "encrypted": send.encrypted,
            "notify": True,
            "index": True,
        }
        if send.kind == GROUP:
            conversation_id, members = population.groups[send.target]
            sender = rng.choice(members)
            body["conversationId"] = conversation_id
            path = "/api/messages/group"
        else:
            sender = population.users[send.sender]
            body["recipientId"] = population.users[send.target]
            path = "/api/messages/direct"
        result.append(Call("POST", path, body, population.headers(sender)))
    return result


def _content(n: int) -> str:
    return (
        f"[{n}] {WARDS[n % len(WARDS)]} handover: bed {n % 30 + 1} obs stable overnight, "
        f"repeat bloods due 14:00, escalate if NEWS2 >= 5. Family updated."
    )


def _expect(answer: httpx.Response, status: int, what: str) -> None:
    if answer.status_code != status:
        raise RuntimeError(f"{what} answered {answer.status_code}: {answer.text[:500]}")
