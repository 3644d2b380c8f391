"""The JWKS endpoint, verification by a third party, and rotation without a restart."""

from __future__ import annotations

from pathlib import Path

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager

from carebase.apps.core import CoreApp, create_app
from carebase.config import Settings
from carebase.operations import cli
from carebase.security.tokens import TokenService, load_keyring

pytestmark = pytest.mark.integration


async def test_jwks_lists_the_signing_key_and_may_be_cached(
    client: httpx.AsyncClient, app: CoreApp
) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    keys = response.json()["keys"]
    assert [k["kid"] for k in keys] == [app.dependencies.tokens.keyring.active.kid]
    assert all("d" not in k for k in keys)


async def test_a_third_party_verifies_tokens_with_the_published_keys(
    client: httpx.AsyncClient, app: CoreApp
) -> None:
    token = app.dependencies.tokens.issue(subject="user-7", organization_id="org-1", role="staff")
    key_set = jwt.PyJWKSet.from_dict((await client.get("/.well-known/jwks.json")).json())
    kid = jwt.get_unverified_header(token)["kid"]
    (signing_key,) = [k for k in key_set.keys if k.key_id == kid]
    claims = jwt.decode(
        token, signing_key.key, algorithms=["EdDSA"], audience="carebase-api", issuer="carebase"
    )
    assert claims["sub"] == "user-7"


async def test_rotation_reaches_a_running_server(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jwt-keys.json"
    keyring = load_keyring(path, token_ttl_s=settings.access_token_ttl_s)
    tokens = TokenService(
        keyring, issuer="carebase", audience="carebase-api", reload_from=path, reload_interval_s=0
    )
    old_token = tokens.issue(subject="u", organization_id=None, role=None)
    app = create_app(
        settings.model_copy(update={"data_dir": tmp_path}), overrides={"tokens": tokens}
    )
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        before = [k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]]
        monkeypatch.setenv("DATA_DIR", str(tmp_path))
        assert cli.main(["keys", "rotate"]) == 0
        after = [k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]]
    assert len(before) == 1
    assert after[0] == before[0], "the retired key stays published"
    assert len(after) == 2
    assert tokens.keyring.active.kid == after[1]
    assert tokens.verify(old_token).subject == "u"
