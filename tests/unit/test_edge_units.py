"""The attack blocker's judgement, without a server."""

from __future__ import annotations

import pytest

from carebase.web.edge import is_probe


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/.env", None),
        ("/.ENV", b"/.ENV"),
        ("/WP-Admin/install.php", b"/WP-Admin/install.php"),
        ("/static/../../etc/shadow", b"/static/%2E%2E/%2E%2E/etc/shadow"),
        ("/a%2e/b", b"/a%252E/b"),
        ("/x\\y", b"/x%5Cy"),
        ("/health/live\x00", b"/health/live%00"),
    ],
)
def test_probes_are_caught_in_either_case_and_either_form(path: str, raw: bytes | None) -> None:
    assert is_probe(path, raw)


@pytest.mark.parametrize(
    "path",
    ["/v1/patients/5c5ed5b6-1f8e-4b9a-9f4e-2f0b6f3a8e11", "/health/live", "/.well-known/jwks.json"],
)
def test_ordinary_paths_pass(path: str) -> None:
    assert not is_probe(path, path.encode())
