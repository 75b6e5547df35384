"""Bearer JWTs: who is calling, for which tenant, with which roles (docs/API.md §3)."""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.requests import HTTPConnection
from starlette.types import Scope

from domain.events import Context
from domain.ids import new_id
from infrastructure.settings import Settings, TokenRules, jwt_algorithm
from interfaces.http.endpoints import services

ROLES = ("user", "auditor", "admin")
DEFAULT_ROLES = ("user",)
REQUIRED_CLAIMS = ["sub", "tenant", "exp", "iat"]
MAX_TOKEN_BYTES = 8 * 1024  # real tokens are a few hundred bytes; bigger ones are refused unread
REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_SCOPE_KEY = "courier.request_id"
_REQUEST_ID_RAW = REQUEST_ID_HEADER.encode("latin-1")
PRINCIPAL_SCOPE_KEY = "courier.principal"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MAX_CLAIM = 256


class AuthError(Exception):
    """No usable token: answered 401 (or a refused WebSocket)."""


class RoleRequired(Exception):
    """A valid token without a role this endpoint needs: answered 403."""


@dataclass(frozen=True)
class Principal:
    context: Context
    roles: frozenset[str]

    @property
    def user_id(self) -> str:
        return self.context.actor_id

    @property
    def tenant_id(self) -> str:
        return self.context.tenant_id


def _key_and_algorithm(settings: Settings) -> tuple[str, str]:
    # An identity provider's public key, when configured, is the only accepted signer,
    # with the one algorithm its type allows (RS256 or EdDSA): accepting HS256 beside it
    # would let anyone holding the public key forge tokens.
    if settings.jwt_public_key:
        return settings.jwt_public_key, _algorithm_of(settings.jwt_public_key)
    return settings.hs256_secret(), "HS256"


@functools.lru_cache(maxsize=8)
def _algorithm_of(public_key_pem: str) -> str:
    return jwt_algorithm(public_key_pem)


def _required(rules: TokenRules) -> list[str]:
    return [
        *REQUIRED_CLAIMS,
        *(["iss"] if rules.issuer else []),
        *(["aud"] if rules.audience else []),
    ]


def decode_token(
    token: str,
    settings: Settings,
    *,
    correlation_id: str = "",
    source_ip: str = "",
    user_agent: str = "",
) -> Principal:
    """Verify ``token`` and return who it speaks for; raise ``AuthError`` otherwise."""
    if not token:
        raise AuthError("a bearer token is required")
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthError(f"the token is longer than {MAX_TOKEN_BYTES} bytes")
    key, algorithm = _key_and_algorithm(settings)
    leeway = settings.limits.jwt_leeway
    rules = settings.tokens
    known = _verified.get((token, key, rules))
    if known is not None:
        # Verified before with this key: only the clock can have changed its verdict.
        if known.expires + leeway <= time.time():
            raise AuthError("the token has expired")
        return known.principal(correlation_id, source_ip, user_agent)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            # exp is checked; so are nbf and iat when present: neither may lie in the future.
            options={"require": _required(rules), "verify_iat": True, "verify_nbf": True},
            leeway=settings.limits.jwt_leeway,
            issuer=rules.issuer,
            audience=rules.audience,
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("the token has expired") from None
    except jwt.ImmatureSignatureError:
        raise AuthError("the token is not valid yet") from None
    except jwt.MissingRequiredClaimError as error:
        raise AuthError(f"the token lacks the {error.claim!r} claim") from None
    except jwt.InvalidIssuerError:
        raise AuthError("the token's 'iss' claim is not the issuer this service trusts") from None
    except jwt.InvalidAudienceError:
        raise AuthError("the token's 'aud' claim does not name this service") from None
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError):
        raise AuthError("the token is not valid") from None
    _check_lifetime(claims, rules)
    sub, tenant = _text_claim(claims, "sub"), _text_claim(claims, "tenant")
    roles = _roles(claims.get("roles", list(DEFAULT_ROLES)))
    verified = _Verified(sub, tenant, tuple(roles), float(claims["exp"]))
    if len(_verified) >= VERIFIED_TOKENS:
        _verified.clear()  # rarely reached: a process sees a few thousand live tokens
    _verified[(token, key, rules)] = verified
    return verified.principal(correlation_id, source_ip, user_agent)


@dataclass(frozen=True)
class _Verified:
    """What a token's signature and claims were found to say."""

    sub: str
    tenant: str
    roles: tuple[str, ...]
    expires: float

    def principal(self, correlation_id: str, source_ip: str, user_agent: str) -> Principal:
        context = Context(
            actor_id=self.sub,
            tenant_id=self.tenant,
            actor_role=self.roles[0],
            correlation_id=correlation_id,
            source_ip=source_ip,
            user_agent=user_agent[:256],
        )
        return Principal(context, frozenset(self.roles))


# Tokens already verified, by token and key: a client sends the same token with every
# request, and verifying its signature each time is most of an authenticated request's cost.
VERIFIED_TOKENS = 10_000
_verified: dict[tuple[str, str, TokenRules], _Verified] = {}


def _check_lifetime(claims: dict[str, Any], rules: TokenRules) -> None:
    """``exp - iat`` at most ``JWT_MAX_LIFETIME_SECONDS``: a stolen token is not good for long."""
    try:
        lifetime = float(claims["exp"]) - float(claims["iat"])
    except (TypeError, ValueError, OverflowError):
        raise AuthError("the token's 'exp' and 'iat' claims must be numbers") from None
    if not lifetime <= rules.max_lifetime:  # also NaN
        raise AuthError(
            f"the token is valid for {lifetime:.0f} s (exp - iat), longer than the "
            f"{rules.max_lifetime:.0f} s this service accepts (JWT_MAX_LIFETIME_SECONDS)"
        )


def _text_claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if (
        not isinstance(value, str)
        or not value
        or len(value) > _MAX_CLAIM
        or not value.isprintable()  # ids go into every event and read table
    ):
        raise AuthError(f"the token's {name!r} claim must be a non-empty string")
    return value


def _roles(value: Any) -> list[str]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(r, str) and r in ROLES for r in value)
    ):
        raise AuthError(f"the token's roles must be a non-empty list of {', '.join(ROLES)}")
    return list(dict.fromkeys(value))


def request_id(conn: HTTPConnection) -> str:
    """The caller's ``X-Request-ID`` when it is sensible, else a new one (kept per request)."""
    return scope_request_id(conn.scope)


def scope_request_id(scope: Scope) -> str:
    """``request_id`` from the ASGI scope itself (its raw headers, without a ``Headers``)."""
    known = scope.get(REQUEST_ID_SCOPE_KEY)
    if isinstance(known, str):
        return known
    given = ""
    for name, value in scope["headers"]:
        if name == _REQUEST_ID_RAW:
            given = value.decode("latin-1")
            break
    rid = given if _REQUEST_ID.fullmatch(given) else new_id().hex
    scope[REQUEST_ID_SCOPE_KEY] = rid
    return rid


def bearer_token(conn: HTTPConnection) -> str:
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("send the header Authorization: Bearer <token>")
    return token.strip()


def authenticate(conn: HTTPConnection, roles: Collection[str] = ROLES) -> Principal:
    """The caller of this request (decoded once per request), holding one of ``roles``."""
    principal = conn.scope.get(PRINCIPAL_SCOPE_KEY)
    if not isinstance(principal, Principal):
        settings = services(conn).settings
        principal = decode_token(
            bearer_token(conn),
            settings,
            correlation_id=request_id(conn),
            source_ip=conn.client.host if conn.client else "",
            user_agent=conn.headers.get("user-agent", ""),
        )
        conn.scope[PRINCIPAL_SCOPE_KEY] = principal
    require_role(principal, roles)
    return principal


def require_role(principal: Principal, roles: Collection[str]) -> None:
    """Roles do not imply one another (docs/API.md §3): one of ``roles`` itself is needed."""
    if principal.roles.isdisjoint(roles):
        raise RoleRequired(f"this needs the role {' or '.join(sorted(roles))}")


def ticket_payload(principal: Principal, token: str) -> str:
    """What a WebSocket ticket stands for: the (verified) token's caller, roles and expiry."""
    exp = jwt.decode(token, options={"verify_signature": False}).get("exp", 0)
    ctx = principal.context
    roles = [ctx.actor_role, *sorted(principal.roles - {ctx.actor_role})]
    return json.dumps({"sub": ctx.actor_id, "tenant": ctx.tenant_id, "roles": roles, "exp": exp})


def ticket_principal(
    payload: str, *, correlation_id: str = "", source_ip: str = "", user_agent: str = ""
) -> tuple[Principal, float]:
    """The caller a redeemed ticket stands for, and when its token expires (Unix time)."""
    data = json.loads(payload)
    verified = _Verified(
        str(data["sub"]), str(data["tenant"]), tuple(data["roles"]), float(data["exp"])
    )
    return verified.principal(correlation_id, source_ip, user_agent), verified.expires


def mint_token(
    settings: Settings, user: str, tenant: str, roles: Sequence[str], ttl_seconds: int
) -> str:
    """A signed HS256 token for development and tests (``courier token``)."""
    if settings.jwt_public_key:
        raise AuthError(
            "JWT_PUBLIC_KEY is set: tokens come from the identity provider that holds "
            "the private key, courier cannot mint them"
        )
    if ttl_seconds > settings.tokens.max_lifetime:
        raise AuthError(
            f"a token may live at most {settings.tokens.max_lifetime:.0f} s "
            f"(JWT_MAX_LIFETIME_SECONDS); asked for {ttl_seconds} s"
        )
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user,
        "tenant": tenant,
        "roles": list(roles) or list(DEFAULT_ROLES),
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if settings.tokens.issuer:
        claims["iss"] = settings.tokens.issuer
    if settings.tokens.audience:
        claims["aud"] = settings.tokens.audience
    return jwt.encode(claims, settings.hs256_secret(), algorithm="HS256")
