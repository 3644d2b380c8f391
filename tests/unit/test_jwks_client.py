"""The JWKS client: cached keys, a bounded re-fetch on an unknown kid, and the last good keys
kept while the issuer is down or answers nonsense."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from carebase.errors import Unauthenticated
from carebase.security.jwks import JwksClient, parse_jwks

ISSUER, AUDIENCE = "carebase", "carebase-api"


class Issuer:
    """A fake identity provider: its keys, its JWKS endpoint, and whether it answers."""

    def __init__(self) -> None:
        self.keys: dict[str, Ed25519PrivateKey] = {"k1": Ed25519PrivateKey.generate()}
        self.calls = 0
        self.answer: Callable[[], httpx.Response] | None = None

    def jwks(self) -> dict[str, object]:
        return {
            "keys": [
                {**OKPAlgorithm.to_jwk(k.public_key(), as_dict=True), "kid": kid, "alg": "EdDSA"}
                for kid, k in self.keys.items()
            ]
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.answer is not None:
            return self.answer()
        return httpx.Response(200, json=self.jwks())

    def token(self, kid: str = "k1", **claims: object) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u1", "iat": now, "exp": now + 300}
        body.update(claims)
        key = self.keys.get(kid) or Ed25519PrivateKey.generate()
        return jwt.encode(body, key, algorithm="EdDSA", headers={"kid": kid})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _client(issuer: Issuer, clock: Clock, **options: object) -> JwksClient:
    return JwksClient(
        "https://core.example/.well-known/jwks.json",
        issuer=ISSUER,
        audience=AUDIENCE,
        transport=httpx.MockTransport(issuer.handle),
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


async def test_verifies_with_cached_keys_and_fetches_once() -> None:
    issuer, clock = Issuer(), Clock()
    client = _client(issuer, clock)
    await client.refresh()
    for _ in range(50):
        assert (await client.verify(issuer.token())).subject == "u1"
    assert issuer.calls == 1
    await client.close()


async def test_an_unknown_kid_storm_fetches_at_most_once_per_cooldown() -> None:
    issuer, clock = Issuer(), Clock()
    client = _client(issuer, clock, cooldown_s=30.0)
    await client.refresh()
    forged = [issuer.token(kid=f"forged-{i}") for i in range(1000)]
    results = await asyncio.gather(*(client.verify(t) for t in forged), return_exceptions=True)
    assert all(isinstance(r, Unauthenticated) for r in results)
    assert issuer.calls <= 2  # the start, and at most one re-fetch in the cooldown
    clock.now += 29
    await asyncio.gather(*(client.verify(t) for t in forged[:100]), return_exceptions=True)
    assert issuer.calls <= 2
    clock.now += 2  # past the cooldown: one more fetch is allowed
    await asyncio.gather(*(client.verify(t) for t in forged[:100]), return_exceptions=True)
    assert issuer.calls <= 3
    await client.close()


async def test_a_rotated_key_is_picked_up_on_first_sight() -> None:
    issuer, clock = Issuer(), Clock()
    client = _client(issuer, clock, cooldown_s=30.0)
    await client.refresh()
    clock.now += 31
    issuer.keys["k2"] = Ed25519PrivateKey.generate()
    assert (await client.verify(issuer.token(kid="k2"))).subject == "u1"
    assert issuer.calls == 2
    await client.close()


@pytest.mark.parametrize(
    "answer",
    [
        lambda: (_ for _ in ()).throw(httpx.ConnectError("core is down")),
        lambda: httpx.Response(503, text="down"),
        lambda: httpx.Response(200, content=b"{not json"),
        lambda: httpx.Response(200, json={"keys": "nope"}),
        lambda: httpx.Response(200, json={"keys": []}),
        lambda: httpx.Response(200, content=b'{"keys": [' + b" " * 70_000 + b"]}"),
        lambda: httpx.Response(302, headers={"location": "https://evil.example/jwks"}),
    ],
    ids=["down", "503", "not-json", "not-a-set", "empty", "oversized", "redirect"],
)
async def test_the_last_good_keys_survive_a_bad_answer(
    answer: Callable[[], httpx.Response],
) -> None:
    issuer, clock = Issuer(), Clock()
    client = _client(issuer, clock)
    await client.refresh()
    issuer.answer = answer
    clock.now += 3600
    assert await client.refresh() is False
    assert client.kids == {"k1"}
    assert (await client.verify(issuer.token())).subject == "u1"
    await client.close()


async def test_an_oversized_answer_is_refused_while_streaming() -> None:
    issuer, clock = Issuer(), Clock()

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (b"x" * 40_000, b"y" * 40_000):
            yield chunk

    def stream() -> httpx.Response:
        return httpx.Response(200, content=chunks())  # no Content-Length: counted as it comes

    issuer.answer = stream
    client = _client(issuer, clock)
    assert await client.refresh() is False
    assert client.kids == frozenset()
    await client.close()


async def test_tokens_that_must_not_verify() -> None:
    issuer, clock = Issuer(), Clock()
    client = _client(issuer, clock)
    await client.refresh()
    now = int(time.time())
    refused = [
        issuer.token(aud="someone-else"),
        issuer.token(iss="https://evil.example"),
        issuer.token(exp=now - 3600),
        jwt.encode({"sub": "u1"}, key=None, algorithm="none", headers={"kid": "k1"}),
        jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "u1", "iat": now, "exp": now + 60},
            "a-shared-secret-of-32-bytes-or-more!",
            algorithm="HS256",
            headers={"kid": "k1"},
        ),
        "not.a.token",
        "x" * 5000,
    ]
    for token in refused:
        with pytest.raises(Unauthenticated):
            await client.verify(token)
    await client.close()


def test_parse_skips_unusable_keys() -> None:
    ed = Ed25519PrivateKey.generate()
    rsa = generate_private_key(public_exponent=65537, key_size=2048)
    document = {
        "keys": [
            {**OKPAlgorithm.to_jwk(ed.public_key(), as_dict=True), "kid": "ed"},
            {**json.loads(RSAAlgorithm.to_jwk(rsa.public_key())), "kid": "rsa", "alg": "RS256"},
            {**json.loads(RSAAlgorithm.to_jwk(rsa)), "kid": "private", "alg": "RS256"},
            {**OKPAlgorithm.to_jwk(ed.public_key(), as_dict=True), "kid": "enc", "use": "enc"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
            {"kid": "broken", "kty": "OKP", "crv": "Ed25519", "x": "!!"},
            "not an object",
        ]
    }
    keys = parse_jwks(document)
    assert set(keys) == {"ed", "rsa"}
    assert keys["ed"][1] == "EdDSA"
    assert keys["rsa"][1] == "RS256"
