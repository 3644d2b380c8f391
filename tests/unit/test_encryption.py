"""The data keyring: sealing, associated data, key ids, rotation and the blind index."""

from __future__ import annotations

import pytest

from carebase.security.encryption import DataKeyring, UnsealError


def test_sealed_values_open_only_with_their_associated_data() -> None:
    keyring = DataKeyring.generate(1)
    sealed = keyring.seal(b"840312-1234", b"patients|org|1|national_id")
    assert b"840312" not in sealed
    assert keyring.open(sealed, b"patients|org|1|national_id") == b"840312-1234"
    with pytest.raises(UnsealError) as moved:
        keyring.open(sealed, b"patients|org|2|national_id")
    assert "840312" not in str(moved.value)
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(UnsealError):
        keyring.open(bytes(flipped), b"patients|org|1|national_id")
    assert keyring.seal(b"x", b"a") != keyring.seal(b"x", b"a")  # a fresh nonce each time


def test_rotation_keeps_old_values_readable_and_the_index_stable() -> None:
    old = DataKeyring.generate(1)
    sealed = old.seal(b"value", b"aad")
    rotated = DataKeyring.loads(old.rotated(2).dumps())
    assert rotated.active.kid != old.active.kid
    assert not rotated.is_current(sealed)
    assert rotated.open(sealed, b"aad") == b"value"
    assert rotated.is_current(rotated.seal(b"value", b"aad"))
    assert rotated.blind_index("phone", "+1555") == old.blind_index("phone", "+1555")
    assert old.blind_index("phone", "+1555") != old.blind_index("national_id", "+1555")
    with pytest.raises(UnsealError):
        DataKeyring.generate(3).open(sealed, b"aad")  # a key id this keyring lacks
