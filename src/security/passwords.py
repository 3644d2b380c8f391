"""Password hashing (argon2id) and the password policy.

Hashing runs in a worker thread: at the default cost it takes tens of milliseconds of CPU,
which must not stall the event loop serving other requests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from carebase.errors import FieldError

MIN_LENGTH = 12
MAX_LENGTH = 128

# The most common long passwords in breach corpora; length alone does not stop these.
_COMMON = frozenset(
    {
        "123456789012",
        "password1234",
        "qwertyuiop12",
        "passwordpassword",
        "iloveyou1234",
        "administrator",
        "letmeinletmein",
        "111111111111",
        "000000000000",
        "abcdefghijkl",
        "qwertyqwerty",
        "changemechangeme",
        "welcome12345",
    }
)


@dataclass(frozen=True, slots=True)
class HashCost:
    """Argon2id parameters; RFC 9106's second recommendation by default (64 MiB, t=3)."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 4


class Passwords:
    def __init__(self, cost: HashCost = HashCost()) -> None:
        self._hasher = PasswordHasher(
            time_cost=cost.time_cost,
            memory_cost=cost.memory_kib,
            parallelism=cost.parallelism,
            type=Type.ID,
        )
        # Verified against when the account does not exist, so an unknown email costs the
        # same time as a wrong password and timing reveals nothing.
        self._decoy = self._hasher.hash("carebase-decoy-password")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Constant-time check; `stored=None` (no such user, no password) still does the work."""
        return await asyncio.to_thread(self._verify, stored, password)

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored or self._decoy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def policy_errors(
    password: str, *, email: str, pointer: str = "/body/password"
) -> list[FieldError]:
    """NIST 800-63B style: length, no well-known passwords, nothing built from the email."""
    found: list[FieldError] = []
    if len(password) < MIN_LENGTH:
        found.append(
            FieldError(pointer, f"Use at least {MIN_LENGTH} characters.", "password_too_short")
        )
    if len(password) > MAX_LENGTH:
        found.append(
            FieldError(pointer, f"Use at most {MAX_LENGTH} characters.", "password_too_long")
        )
    lowered = password.lower()
    local_part = email.split("@", 1)[0].lower()
    if lowered in _COMMON or len(set(lowered)) < 4:
        found.append(FieldError(pointer, "This password is too easy to guess.", "password_common"))
    elif len(local_part) >= 4 and local_part in lowered:
        found.append(
            FieldError(pointer, "The password must not contain your email.", "password_personal")
        )
    return found
