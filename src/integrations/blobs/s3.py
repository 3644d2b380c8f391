"""The S3 blob store (boto3): objects in one bucket, presigned PUT and GET for the clients.

boto3 is synchronous; each call runs in a worker thread. Credentials come from the AWS
environment (variables, profile, instance role) as boto3 finds them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from carebase.integrations.blobs import SignedUrl, content_disposition

_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


class S3BlobStore:
    serves_urls = False

    def __init__(self, bucket: str, client: Any) -> None:
        self.bucket = bucket
        self._client = client

    @classmethod
    def from_url(cls, url: str) -> S3BlobStore:
        """`s3://bucket?region=eu-central-1&endpoint_url=https://…` (both optional)."""
        parts = urlsplit(url)
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        client = boto3.client(
            "s3",
            region_name=options.get("region"),
            endpoint_url=options.get("endpoint_url"),
            config=Config(
                signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"}
            ),
        )
        return cls(parts.netloc, client)

    async def put(self, key: str, data: bytes, media_type: str) -> None:
        await asyncio.to_thread(
            self._client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=media_type,
            IfNoneMatch="*",  # an object is written once, as on the filesystem
        )

    async def get(self, key: str, *, max_bytes: int) -> bytes | None:
        return await asyncio.to_thread(self._get, key, max_bytes)

    def _get(self, key: str, max_bytes: int) -> bytes | None:
        try:
            found = self._client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise
        with found["Body"] as body:
            if found.get("ContentLength", 0) > max_bytes:
                return None
            data: bytes = body.read(max_bytes + 1)
        return None if len(data) > max_bytes else data

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=key)

    def upload_url(self, key: str, *, ttl_s: int) -> SignedUrl:
        """A presigned PUT that only creates: `If-None-Match: *` is signed into it (S3's
        conditional write), so the bytes cannot be replaced after `complete` checked them."""
        url = self._client.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "IfNoneMatch": "*"},
            ExpiresIn=ttl_s,
            HttpMethod="PUT",
        )
        return SignedUrl("PUT", url, _expiry(ttl_s), {"If-None-Match": "*"})

    def download_url(self, key: str, *, filename: str, media_type: str, ttl_s: int) -> SignedUrl:
        url = self._client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentDisposition": content_disposition(filename),
                "ResponseContentType": media_type,
            },
            ExpiresIn=ttl_s,
        )
        return SignedUrl("GET", url, _expiry(ttl_s))


def _expiry(ttl_s: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=ttl_s)
