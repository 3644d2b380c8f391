"""Core accepting an external identity provider's tokens (AUTH_JWKS_URL): verified against its
JWKS, users provisioned just in time by issuer and subject, never linked to a local account by
an address the provider did not verify."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from jwt.algorithms import RSAAlgorithm
from support import Person

from carebase.apps.core import create_app
from carebase.config import Settings

ISSUER, AUDIENCE = "https://idp.example.org/", "carebase-clinic"
KEY = generate_private_key(public_exponent=65537, key_size=2048)


def _jwks(_: httpx.Request) -> httpx.Response:
    jwk = json.loads(RSAAlgorithm.to_jwk(KEY.public_key()))
    return httpx.Response(200, json={"keys": [{**jwk, "kid": "idp-1", "alg": "RS256"}]})


def idp_token(subject: str, **claims: Any) -> dict[str, str]:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 300}
    token = jwt.encode({**body, **claims}, KEY, algorithm="RS256", headers={"kid": "idp-1"})
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
async def federated(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(
        update={
            "auth_jwks_url": "https://idp.example.org/.well-known/jwks.json",
            "auth_issuer": ISSUER,
            "auth_audience": AUDIENCE,
        }
    )
    application = create_app(configured, overrides={"jwks_transport": httpx.MockTransport(_jwks)})
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application, client=("203.0.113.9", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://carebase.test") as c:
            yield c


def _users(conn: psycopg.Connection[Any], subject: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT id, email, email_verified_at IS NOT NULL FROM identity.users"
        " WHERE external_subject = %s",
        (f"{ISSUER}|{subject}",),
    ).fetchall()


async def test_a_new_person_is_provisioned_once(
    federated: httpx.AsyncClient, admin_conn: psycopg.Connection[Any]
) -> None:
    subject = f"idp-{uuid.uuid4().hex}"
    email = f"{subject}@clinic.example.org"
    headers = idp_token(subject, email=email, email_verified=True, name="Iva Idp")
    for _ in range(2):
        me = await federated.get("/v1/me", headers=headers)
        assert me.status_code == 200, me.text
    assert me.json()["email"] == email
    (user,) = _users(admin_conn, subject)
    assert user[1:] == (email, True)
    # The same person's next token (another session) is the same account.
    again = await federated.get("/v1/me", headers=idp_token(subject, email=email))
    assert again.json()["id"] == str(user[0])


async def test_only_a_verified_address_links_a_local_account(
    federated: httpx.AsyncClient,
    admin_conn: psycopg.Connection[Any],
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
) -> None:
    local = person(new_org(), "staff")
    unverified = f"idp-{uuid.uuid4().hex}"
    me = await federated.get(
        "/v1/me", headers=idp_token(unverified, email=local.email, email_verified=False)
    )
    assert me.status_code == 200
    assert me.json()["id"] != str(local.user_id)  # never the local account
    assert me.json()["email"].endswith("@external.invalid")
    verified = f"idp-{uuid.uuid4().hex}"
    me = await federated.get(
        "/v1/me", headers=idp_token(verified, email=local.email, email_verified=True)
    )
    assert me.json()["id"] == str(local.user_id)
    # Linked, it acts in its organization when the token names it, and switches as usual.
    org = str(local.organization_id)
    scoped = await federated.get(
        "/v1/patients", headers=idp_token(verified, email=local.email, org=org)
    )
    assert scoped.status_code == 200
    foreign = await federated.get(
        "/v1/patients", headers=idp_token(verified, email=local.email, org=str(uuid.uuid4()))
    )
    assert foreign.status_code == 403  # a member of no such organization: acts in none


async def test_tokens_the_provider_did_not_sign_for_us_are_refused(
    federated: httpx.AsyncClient, person: Callable[..., Person]
) -> None:
    subject = f"idp-{uuid.uuid4().hex}"
    for headers in (
        idp_token(subject, aud="someone-else"),
        idp_token(subject, iss="https://evil.example.org/"),
        idp_token(subject, exp=int(time.time()) - 600),
    ):
        assert (await federated.get("/v1/me", headers=headers)).status_code == 401
    # Carebase's own tokens still work beside the provider's.
    local = person()
    assert (await federated.get("/v1/me", headers=local.auth)).status_code == 200
