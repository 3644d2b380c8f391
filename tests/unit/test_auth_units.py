"""The pure parts of authentication: role table, caches, entity tags, password policy, keys."""

from __future__ import annotations

import time
import uuid

import pytest

from carebase.errors import PreconditionFailed
from carebase.principal import Principal
from carebase.security import credentials, passwords, permissions
from carebase.security.auth import TtlCache
from carebase.web import etags


def member(role: str | None, *, user: bool = True, superadmin: bool = False) -> Principal:
    return Principal(
        user_id=uuid.uuid4() if user else None,
        organization_id=uuid.uuid4() if role else None,
        role=role,
        is_superadmin=superadmin,
    )


@pytest.mark.parametrize(
    "permission", ["members:write", "api_keys:write", "organizations:write", "audit:read"]
)
def test_only_admins_manage_the_organization(permission: str) -> None:
    holders = {
        r for r in permissions.ORGANIZATION_ROLES if permissions.allows(member(r), permission)
    }
    assert holders == {"admin"}


def test_patients_never_see_the_member_list() -> None:
    assert not permissions.allows(member("patient"), "members:read")


def test_superadmin_is_a_platform_flag_not_a_tenant_role() -> None:
    platform_only = member(None, superadmin=True)
    assert permissions.allows(platform_only, "organizations:create")
    assert not permissions.allows(platform_only, "members:read")
    assert not permissions.allows(member("admin"), "organizations:create")


def test_api_keys_act_for_an_organization_not_a_person() -> None:
    key = member("admin", user=False)
    assert permissions.allows(key, "members:read")
    assert not permissions.allows(key, "profile:read")


def test_cache_expires_and_evicts_the_least_recent() -> None:
    cache = TtlCache[str, int](ttl_s=0.05, max_entries=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    time.sleep(0.06)
    assert cache.get("a") is None


def test_a_zero_ttl_cache_trusts_nothing() -> None:
    cache = TtlCache[str, int](ttl_s=0)
    cache.put("a", 1)
    assert cache.get("a") is None


def test_entity_tags() -> None:
    assert etags.etag(3) == '"3"'
    assert etags.expected_version('"3"') == 3
    assert etags.expected_version(" * ") is None
    for weak_or_broken in ('W/"3"', "3", '"three"', '"3", "4"'):
        with pytest.raises(PreconditionFailed):
            etags.expected_version(weak_or_broken)


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("short", "password_too_short"),
        ("x" * 129, "password_too_long"),
        ("password1234", "password_common"),
        ("aaaaaaaaaaaaaaaa", "password_common"),
        ("dana.reyes-is-great", "password_personal"),
    ],
)
def test_password_policy(password: str, code: str) -> None:
    found = passwords.policy_errors(password, email="dana.reyes@example.com")
    assert code in {error.code for error in found}


def test_a_good_password_passes() -> None:
    assert passwords.policy_errors("correct-horse-battery-staple", email="d@example.com") == []


async def test_hashes_verify_and_unknown_users_still_cost_a_verification() -> None:
    hasher = passwords.Passwords(passwords.HashCost(time_cost=1, memory_kib=1024))
    stored = await hasher.hash("correct-horse-battery-staple")
    assert stored.startswith("$argon2id$")
    assert await hasher.verify(stored, "correct-horse-battery-staple")
    assert not await hasher.verify(stored, "wrong")
    assert not await hasher.verify(None, "carebase-decoy-password")  # the decoy never admits


def test_api_keys_round_trip_and_malformed_keys_are_refused() -> None:
    prefix, key = credentials.new_api_key()
    assert credentials.split_api_key(key) == (prefix, key)
    for bad in ("", "cbk_", f"cbk_{prefix}", "xyz_" + key[4:], f"cbk_ZZZZZZZZZZZZ_{'a' * 40}"):
        assert credentials.split_api_key(bad) is None
