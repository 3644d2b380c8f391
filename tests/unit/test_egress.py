"""The SSRF guard: internal addresses in every spelling are refused, by literal and by name."""

from __future__ import annotations

import ipaddress

import pytest

from carebase.security.egress import (
    EgressRefused,
    check_destination,
    embedded_ipv4,
    is_public,
    literal_address,
    system_resolver,
)

INTERNAL = [
    "http://127.0.0.1/hook",
    "http://localhost/hook",
    "http://[::1]/hook",
    "http://0.0.0.0/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1/hook",
    "http://10.0.0.1/hook",
    "http://192.168.1.1/hook",
    "http://[fc00::1]/hook",
    "http://[fe80::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[64:ff9b::7f00:1]/hook",
    "http://[64:ff9b::a00:1]/hook",
    "http://[2002:7f00:1::]/hook",
    "http://2130706433/hook",
    "http://0x7f.1/hook",
    "http://127.1/hook",
    "http://017700000001/hook",
    "http://224.0.0.1/hook",
]

# What the test resolver answers for names; `localhost` and the rebinding names resolve inside.
NAMES = {
    "localhost": ["127.0.0.1", "::1"],
    "hooks.example.com": ["93.184.216.34"],
    "both.example.com": ["93.184.216.34", "10.0.0.7"],
    "mapped.example.com": ["::ffff:10.0.0.1"],
    "nat64.example.com": ["64:ff9b::a9fe:a9fe"],
    "v6.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
}


async def resolver(host: str, port: int) -> list[str]:
    if host not in NAMES:
        raise OSError("no such name")
    return NAMES[host]


@pytest.mark.parametrize("url", INTERNAL)
async def test_internal_destinations_are_refused(url: str) -> None:
    with pytest.raises(EgressRefused):
        await check_destination(url, resolver=resolver, allow_http=True)


@pytest.mark.parametrize(
    "host",
    ["both.example.com", "mapped.example.com", "nat64.example.com", "nowhere.example.com"],
)
async def test_a_name_passes_only_when_every_answer_is_public(host: str) -> None:
    with pytest.raises(EgressRefused):
        await check_destination(f"https://{host}/hook", resolver=resolver)


async def test_public_destinations_pass_with_the_addresses_to_connect_to() -> None:
    found = await check_destination("https://hooks.example.com/in", resolver=resolver)
    assert found.host == "hooks.example.com"
    assert found.port == 443
    assert found.addresses == (ipaddress.ip_address("93.184.216.34"),)
    six = await check_destination("https://v6.example.com:8443/in", resolver=resolver)
    assert six.port == 8443
    literal = await check_destination("https://93.184.216.34/in", resolver=resolver)
    assert literal.addresses == (ipaddress.ip_address("93.184.216.34"),)


@pytest.mark.parametrize(
    ("url", "allow_http"),
    [
        ("http://hooks.example.com/in", False),  # production: https only
        ("ftp://hooks.example.com/in", True),
        ("https://user:secret@hooks.example.com/in", False),
        ("https://hooks.example.com:22/in", False),
        ("https://hooks.example.com:99999/in", False),
        ("https:///in", False),
        ("hooks.example.com/in", False),
    ],
)
async def test_scheme_user_info_and_port_are_checked(url: str, allow_http: bool) -> None:
    with pytest.raises(EgressRefused):
        await check_destination(url, resolver=resolver, allow_http=allow_http)


def test_embedded_ipv4_forms_are_unwrapped() -> None:
    loopback = ipaddress.IPv4Address("127.0.0.1")
    for text in ("::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::"):
        assert embedded_ipv4(ipaddress.ip_address(text)) == loopback
    # Python calls the NAT64 form global; the guard does not.
    assert ipaddress.ip_address("64:ff9b::a00:1").is_global
    assert not is_public(ipaddress.ip_address("64:ff9b::a00:1"))
    assert is_public(ipaddress.ip_address("8.8.8.8"))


@pytest.mark.parametrize("host", ["a..b", "x" * 300, "é..com"])
async def test_names_the_system_resolver_cannot_read_are_refused_not_raised(host: str) -> None:
    # IDNA refuses these before any lookup: no query leaves the machine.
    with pytest.raises(EgressRefused):
        await check_destination(f"https://{host}/hook", resolver=system_resolver)


def test_a_host_with_an_embedded_nul_is_no_address() -> None:
    assert literal_address("127.0.0.1\x00.evil") is None
