"""Access tokens: the round trip, rotation, and the attacks every verifier must refuse."""

from __future__ import annotations

import base64
import dataclasses
import json
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from carebase.errors import Unauthenticated
from carebase.security.tokens import (
    Keyring,
    KeyringError,
    SigningKey,
    TokenService,
    load_keyring,
    save_keyring,
)

TTL = 900
ISSUER, AUDIENCE = "carebase", "carebase-api"


@pytest.fixture
def service() -> TokenService:
    keyring = Keyring([SigningKey.generate(int(time.time()) - 60)], token_ttl_s=TTL)
    return TokenService(keyring, issuer=ISSUER, audience=AUDIENCE)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": now, "exp": now + 60}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def signed(service: TokenService, payload: dict[str, Any], **headers: Any) -> str:
    key = service.keyring.active
    return jwt.encode(
        payload, key.private_key, algorithm="EdDSA", headers={"kid": key.kid, **headers}
    )


def test_round_trip(service: TokenService) -> None:
    token = service.issue(subject="user-1", organization_id="org-1", role="admin")
    found = service.verify(token)
    assert (found.subject, found.organization_id, found.role) == ("user-1", "org-1", "admin")
    assert found.expires_at - found.issued_at == TTL
    assert jwt.get_unverified_header(token)["kid"] == service.keyring.active.kid


def test_impersonation_is_marked(service: TokenService) -> None:
    token = service.issue(subject="patient", organization_id="o", role="patient", impersonator="a")
    assert service.verify(token).impersonator == "a"


def test_alg_none_is_refused(service: TokenService) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": service.keyring.active.kid}
    token = f"{b64(header)}.{b64(claims())}."
    with pytest.raises(Unauthenticated):
        service.verify(token)


def test_tampered_payload_is_refused(service: TokenService) -> None:
    head, _, signature = signed(service, claims()).split(".")
    forged = f"{head}.{b64(claims(sub='admin-of-everything'))}.{signature}"
    with pytest.raises(Unauthenticated):
        service.verify(forged)


def test_hs256_signed_with_the_public_key_is_refused(service: TokenService) -> None:
    public = service.keyring.active.public_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    token = jwt.encode(
        claims(), public, algorithm="HS256", headers={"kid": service.keyring.active.kid}
    )
    with pytest.raises(Unauthenticated):
        service.verify(token)


@pytest.mark.parametrize("kid", ["unknown", "../../etc/passwd", "' OR 1=1 --", ""])
def test_unknown_or_injected_kid_is_refused(service: TokenService, kid: str) -> None:
    attacker = Ed25519PrivateKey.generate()
    token = jwt.encode(claims(), attacker, algorithm="EdDSA", headers={"kid": kid})
    with pytest.raises(Unauthenticated, match=r"unknown signing key|unexpected"):
        service.verify(token)


def test_missing_kid_is_refused(service: TokenService) -> None:
    token = jwt.encode(claims(), service.keyring.active.private_key, algorithm="EdDSA")
    with pytest.raises(Unauthenticated):
        service.verify(token)


@pytest.mark.parametrize("header", ["jku", "x5u"])
def test_key_url_headers_are_never_followed(service: TokenService, header: str) -> None:
    attacker = Ed25519PrivateKey.generate()
    token = jwt.encode(
        claims(),
        attacker,
        algorithm="EdDSA",
        headers={"kid": service.keyring.active.kid, header: "https://attacker.test/keys"},
    )
    with pytest.raises(Unauthenticated, match="invalid token"):
        service.verify(token)


def test_embedded_jwk_header_is_ignored(service: TokenService) -> None:
    attacker = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    token = jwt.encode(
        claims(),
        attacker,
        algorithm="EdDSA",
        headers={"kid": service.keyring.active.kid, "jwk": jwk},
    )
    with pytest.raises(Unauthenticated):
        service.verify(token)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"exp": int(time.time()) - 3600}, id="expired"),
        pytest.param({"nbf": int(time.time()) + 3600}, id="not-yet-valid"),
        pytest.param(
            {"iat": int(time.time()) + 3600, "exp": int(time.time()) + 7200}, id="future-iat"
        ),
        pytest.param({"iss": "someone-else"}, id="wrong-issuer"),
        pytest.param({"aud": "another-api"}, id="wrong-audience"),
    ],
)
def test_bad_claims_are_refused(service: TokenService, payload: dict[str, Any]) -> None:
    with pytest.raises(Unauthenticated):
        service.verify(signed(service, claims(**payload)))


@pytest.mark.parametrize("missing", ["sub", "exp", "iat", "iss", "aud"])
def test_every_required_claim_is_required(service: TokenService, missing: str) -> None:
    payload = claims()
    del payload[missing]
    with pytest.raises(Unauthenticated):
        service.verify(signed(service, payload))


def test_oversized_token_is_refused_before_parsing(service: TokenService) -> None:
    token = signed(service, claims(padding="x" * 5000))
    with pytest.raises(Unauthenticated, match="too large"):
        service.verify(token)


def test_garbage_is_refused(service: TokenService) -> None:
    for token in ("", "abc", "a.b.c", "....", "eyJhbGciOiJFZERTQSJ9.e30"):
        with pytest.raises(Unauthenticated):
            service.verify(token)


def test_rotation_keeps_old_tokens_valid_until_they_expire(service: TokenService) -> None:
    now = int(time.time())
    old_token = service.issue(subject="u", organization_id=None, role=None)
    old_kid = service.keyring.active.kid
    rotated = TokenService(service.keyring.rotated(now), issuer=ISSUER, audience=AUDIENCE)
    assert rotated.keyring.active.kid != old_kid
    assert rotated.verify(old_token).subject == "u"
    assert {k["kid"] for k in rotated.keyring.jwks(now)["keys"]} == {
        old_kid,
        rotated.keyring.active.kid,
    }
    new_token = rotated.issue(subject="v", organization_id=None, role=None)
    assert jwt.get_unverified_header(new_token)["kid"] == rotated.keyring.active.kid
    later = now + TTL + 120
    with pytest.raises(Unauthenticated, match="unknown signing key"):
        rotated.verify(old_token, now=later)
    assert [k["kid"] for k in rotated.keyring.jwks(later)["keys"]] == [rotated.keyring.active.kid]
    assert len(rotated.keyring.rotated(later).keys) == 2  # the long-retired key is dropped


def test_jwks_publishes_public_keys_only(service: TokenService) -> None:
    (key,) = service.keyring.jwks(int(time.time()))["keys"]
    assert key["kty"] == "OKP"
    assert key["crv"] == "Ed25519"
    assert key["alg"] == "EdDSA"
    assert key["use"] == "sig"
    assert "d" not in key


def test_keyring_file_is_private_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "jwt-keys.json"
    first = load_keyring(path, token_ttl_s=TTL)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_keyring(path, token_ttl_s=TTL)
    assert [k.kid for k in again.keys] == [k.kid for k in first.keys]
    save_keyring(first.rotated(int(time.time())), path)
    assert len(load_keyring(path, token_ttl_s=TTL).keys) == 2


def test_keyring_from_environment_wins(tmp_path: Path) -> None:
    from_env = Keyring([SigningKey.generate(1)], token_ttl_s=TTL).dumps()
    keyring = load_keyring(tmp_path / "unused.json", token_ttl_s=TTL, from_env=from_env)
    assert not (tmp_path / "unused.json").exists()
    assert keyring.active.created_at == 1


@pytest.mark.parametrize("text", ["not json", "[]", '[{"kid": "x"}]', "{}"])
def test_unreadable_keyring_is_refused(text: str) -> None:
    with pytest.raises(KeyringError):
        Keyring.loads(text, token_ttl_s=TTL)


def test_a_remembered_token_stops_when_its_key_leaves_the_keyring(
    service: TokenService, tmp_path: Path
) -> None:
    token = service.issue(subject="u1", organization_id=None, role=None)
    first = service.verify(token)
    assert service.verify(token) is first  # verified once, then remembered
    path = tmp_path / "keys.json"
    save_keyring(Keyring([SigningKey.generate(int(time.time()))], token_ttl_s=900), path)
    reloading = TokenService(
        service.keyring,
        issuer=service.issuer,
        audience=service.audience,
        reload_from=path,
        reload_interval_s=0,
    )
    assert reloading.verify(token).subject == "u1"
    path.touch()  # a rotation elsewhere replaced every key: the remembered token must go
    with pytest.raises(Unauthenticated):
        reloading.verify(token)


def test_an_expired_token_is_not_served_from_memory(service: TokenService) -> None:
    token = service.issue(subject="u1", organization_id=None, role=None, ttl_s=60)
    known = service.verify(token)
    service._verified[token] = (
        dataclasses.replace(known, expires_at=int(time.time()) - 1),
        service.keyring.active.kid,
    )
    assert service.verify(token).expires_at == known.expires_at  # verified afresh
