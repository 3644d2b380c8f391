"""What an upload is: its sniffed type, its multipart body read against the schema, the name
it is saved under, and the filesystem store's URL signatures."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from carebase.errors import (
    Forbidden,
    LinkExpired,
    MalformedRequest,
    UnsupportedMediaType,
    ValidationFailed,
)
from carebase.integrations.blobs import FileBlobStore, UrlSigner, content_disposition
from carebase.services import file_types
from carebase.web.bodies import MultipartBody, Upload
from carebase.web.contract import RequestBody

BOUNDARY = "b0undary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"%PDF-1.4\n...", file_types.PDF),
        (b"\x89PNG\r\n\x1a\n\x00\x00", file_types.PNG),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", file_types.JPEG),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", file_types.HEIC),
        (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1heic", file_types.HEIC),
        (b"\x00" * 128 + b"DICM\x02\x00", file_types.DICOM),
        ("Ștefan Țurcanu: pain 3/10\r\n\tsince March\n".encode(), file_types.TEXT),
        (b"\xef\xbb\xbfwith a byte order mark", file_types.TEXT),
        (b"MZ\x90\x00\x03\x00", None),  # a Windows executable, whatever it is named
        (b"\x7fELF\x02\x01\x01", None),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00isommp42", None),  # an MP4 video
        (b"PK\x03\x04\x14\x00", None),  # a zip (or an Office document)
        (b"text with a \x00 byte", None),
        (b"\xc3\x28 not UTF-8", None),
        (b"", None),
    ],
)
def test_the_type_is_read_from_the_bytes(data: bytes, expected: str | None) -> None:
    assert file_types.sniff(data) == expected


def test_every_allowed_type_has_an_extension() -> None:
    assert set(file_types.EXTENSIONS) == set(file_types.ALLOWED)


def _reader() -> MultipartBody:
    return MultipartBody(
        RequestBody(
            required=True,
            content={
                "multipart/form-data": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["owner_id", "file"],
                    "properties": {
                        "owner_id": {"type": "string", "format": "uuid"},
                        "note": {"type": "string", "maxLength": 5},
                        "file": {"type": "string", "format": "binary"},
                    },
                }
            },
        )
    )


def _body(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += value + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


OWNER = ("owner_id", None, b"5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a")


async def test_a_multipart_body_gives_its_fields_and_files() -> None:
    read = await _reader().read(MULTIPART, _body(OWNER, ("file", "scan.pdf", b"%PDF-1.7")))
    assert isinstance(read, Upload)
    assert read.fields == {"owner_id": "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"}
    assert read.files["file"].filename == "scan.pdf"
    assert read.files["file"].data == b"%PDF-1.7"
    assert read.fingerprint()["files"]["file"][0] == "scan.pdf"


@pytest.mark.parametrize(
    ("parts", "pointers"),
    [
        ((OWNER,), ["/body/file"]),  # no file
        ((OWNER, ("file", None, b"not a file part")), ["/body/file"]),
        ((OWNER, ("note", "n.txt", b"x"), ("file", "a", b"x")), ["/body/note"]),
        ((OWNER, ("file", "a", b"x"), ("owner_id", None, b"again")), ["/body/owner_id"]),
        ((("owner_id", None, b"nope"), ("file", "a", b"x")), ["/body/owner_id"]),
        ((OWNER, ("extra", None, b"x"), ("file", "a", b"x")), ["/body/extra"]),
        ((OWNER, ("note", None, b"\x00"), ("file", "a", b"x")), ["/body/note"]),
    ],
)
async def test_a_multipart_body_is_checked_against_its_schema(
    parts: tuple[tuple[str, str | None, bytes], ...], pointers: list[str]
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await _reader().read(MULTIPART, _body(*parts))
    assert sorted({e.pointer for e in caught.value.errors}) == pointers


async def test_an_unreadable_or_mistyped_multipart_body_is_refused() -> None:
    with pytest.raises(UnsupportedMediaType):
        await _reader().read("application/json", b"{}")
    with pytest.raises(MalformedRequest):
        await _reader().read("multipart/form-data", b"--x\r\n")  # no boundary
    with pytest.raises(MalformedRequest):
        await _reader().read(MULTIPART, b"")


def test_the_saved_name_keeps_unicode_and_an_ascii_fallback() -> None:
    assert content_disposition('Ș "x".pdf') == (
        "attachment; filename=\"_ _x_.pdf\"; filename*=UTF-8''%C8%98%20%22x%22.pdf"
    )


class _Clock(dt.datetime):
    at = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)

    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
        return cls.at


def test_signed_urls_cover_what_they_allow_and_expire(tmp_path: Path) -> None:
    signer = UrlSigner(b"k" * 32, now=_Clock)
    store = FileBlobStore(tmp_path, signer, public_base_url="https://api.example/")
    key = "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a/9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"
    url = store.download_url(key, filename="a.pdf", media_type="application/pdf", ttl_s=300)
    assert url.url.startswith(f"https://api.example/v1/blobs/{key}?filename=a.pdf&")
    assert url.expires_at == _Clock.at + dt.timedelta(seconds=300)
    expires = int(url.expires_at.timestamp())
    signature = url.url.rsplit("signature=", 1)[1]
    signer.check(signature, expires, "GET", key, "a.pdf", "application/pdf")
    with pytest.raises(Forbidden):
        signer.check(signature, expires, "GET", key, "b.pdf", "application/pdf")
    with pytest.raises(Forbidden):
        signer.check(signature, expires, "PUT", key, "a.pdf", "application/pdf")
    _Clock.at += dt.timedelta(seconds=301)
    with pytest.raises(LinkExpired):
        signer.check(signature, expires, "GET", key, "a.pdf", "application/pdf")
    with pytest.raises(ValueError, match="not a blob key"):
        store.path("../../etc/passwd")
