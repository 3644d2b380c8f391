"""Where attachments' bytes live: a `BlobStore`, the local filesystem by default or S3.

The API never streams an upload to a client's storage by hand: it hands out short-lived
signed URLs. S3 signs its own (presigned PUT and GET, `ResponseContentDisposition`); the
filesystem store signs URLs that point back at this API (`/v1/blobs/{organization_id}/{id}`)
with an HMAC over the method, the key, the expiry and what the answer will say, and checks
them when they come back. Keys are `<organization id>/<attachment id>`: no health data, no
file name.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlencode

from carebase.errors import Forbidden, LinkExpired

KEY = re.compile(
    r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}/[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}"
)


@dataclass(frozen=True, slots=True)
class SignedUrl:
    """A request the client makes itself, for a while: method, URL and the headers to send."""

    method: str
    url: str
    expires_at: dt.datetime
    headers: dict[str, str] = field(default_factory=dict)


class BlobStore(Protocol):
    serves_urls: bool
    """True when its URLs point at this API (the filesystem store), which must check them."""

    async def put(self, key: str, data: bytes, media_type: str) -> None: ...

    async def get(self, key: str, *, max_bytes: int) -> bytes | None:
        """The object's bytes; None when there is none or it is larger than `max_bytes`."""

    async def delete(self, key: str) -> None:
        """Gone afterwards, whether or not it was there."""

    def upload_url(self, key: str, *, ttl_s: int) -> SignedUrl: ...

    def download_url(
        self, key: str, *, filename: str, media_type: str, ttl_s: int
    ) -> SignedUrl: ...


def blob_key(organization_id: object, attachment_id: object) -> str:
    return f"{organization_id}/{attachment_id}"


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """RFC 6266: an ASCII fallback and the UTF-8 name (RFC 8187)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"{disposition}; filename=\"{fallback or 'file'}\"; filename*=UTF-8''{quote(filename)}"


def load_signing_key(path: Path, from_env: str | None) -> bytes:
    """The environment's key, or the data directory's (written 0600 on first run)."""
    if from_env:
        return from_env.encode()
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    try:
        os.link(temporary, path)  # the first process to get here wins; the others read its key
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return path.read_bytes().strip()


class UrlSigner:
    """HMAC-SHA256 over what a URL allows; compared in constant time."""

    def __init__(self, key: bytes, *, now: type[dt.datetime] = dt.datetime) -> None:
        self._key = key
        self._now = now

    def sign(self, *parts: str) -> str:
        message = "\n".join(parts).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def expiry(self, ttl_s: int) -> int:
        return int(self._now.now(dt.UTC).timestamp()) + ttl_s

    def check(self, signature: str, expires: int, *parts: str) -> None:
        """403 for a forged or altered URL; 403 `link-expired` for one whose time is up."""
        if not hmac.compare_digest(self.sign(*parts, str(expires)), signature):
            raise Forbidden("The link's signature does not match.")
        if expires < int(self._now.now(dt.UTC).timestamp()):
            raise LinkExpired("The link has expired; ask for a new one.")


class FileBlobStore:
    """Objects as files under a directory: written to a temporary name, synced, then linked
    into place — once: an object is never overwritten (`FileExistsError`), so a signed upload
    URL cannot swap the bytes of a file after it was checked."""

    serves_urls = True

    def __init__(self, root: Path, signer: UrlSigner, *, public_base_url: str) -> None:
        self.root = root
        self.signer = signer
        self._base = public_base_url.rstrip("/")

    def path(self, key: str) -> Path:
        if not KEY.fullmatch(key):
            raise ValueError("not a blob key")
        return self.root / key

    async def put(self, key: str, data: bytes, media_type: str) -> None:
        await asyncio.to_thread(self._write, self.path(key), data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.link(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename survives a crash
        finally:
            os.close(directory)

    async def get(self, key: str, *, max_bytes: int) -> bytes | None:
        return await asyncio.to_thread(self._read, self.path(key), max_bytes)

    @staticmethod
    def _read(path: Path, max_bytes: int) -> bytes | None:
        try:
            with path.open("rb") as handle:
                data = handle.read(max_bytes + 1)
        except FileNotFoundError:
            return None
        return None if len(data) > max_bytes else data

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path(key).unlink, missing_ok=True)

    def upload_url(self, key: str, *, ttl_s: int) -> SignedUrl:
        expires = self.signer.expiry(ttl_s)
        signature = self.signer.sign("PUT", key, str(expires))
        query = urlencode({"expires": expires, "signature": signature})
        return SignedUrl(
            "PUT",
            f"{self._base}/v1/blobs/{key}?{query}",
            dt.datetime.fromtimestamp(expires, dt.UTC),
            {"Content-Type": "application/octet-stream"},
        )

    def download_url(self, key: str, *, filename: str, media_type: str, ttl_s: int) -> SignedUrl:
        expires = self.signer.expiry(ttl_s)
        signature = self.signer.sign("GET", key, filename, media_type, str(expires))
        query = urlencode(
            {"filename": filename, "type": media_type, "expires": expires, "signature": signature}
        )
        return SignedUrl(
            "GET",
            f"{self._base}/v1/blobs/{key}?{query}",
            dt.datetime.fromtimestamp(expires, dt.UTC),
        )
