"""The reference for `make bench`: GET /v1/patients/{id} as a plain FastAPI + psycopg app.

Not part of the product. It does what Carebase's GET does, the straightforward way: verify
the EdDSA bearer token (PyJWT), open a pooled transaction, set the tenant settings for row-level
security, select the row, open the five sealed fields (the same keyring and associated data)
and answer JSON. It trusts the role in the token (Carebase reads it from the database, cached),
and has no rate limit, audit context, contract validation or problem documents.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import jwt
from fastapi import FastAPI, Header, HTTPException
from psycopg_pool import AsyncConnectionPool

from carebase.security.encryption import DataKeyring
from carebase.security.tokens import Keyring

KEYS = Keyring.loads(os.environ["JWT_SIGNING_KEYS"], token_ttl_s=3600)
SEALER = DataKeyring.loads(os.environ["DATA_ENCRYPTION_KEYS"])
POOL = AsyncConnectionPool(
    os.environ["DATABASE_URL"], min_size=4, max_size=16, open=False, kwargs={"autocommit": True}
)
SEALED = ("birth_date", "national_id", "phone", "address", "notes")


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    await POOL.open()
    yield
    await POOL.close()


app = FastAPI(lifespan=lifespan)


@app.get("/v1/patients/{patient_id}")
async def get_patient(patient_id: UUID, authorization: str = Header()) -> dict[str, Any]:
    token = authorization.removeprefix("Bearer ")
    try:
        kid = jwt.get_unverified_header(token)["kid"]
        key = KEYS.verifying_key(kid, 0) or KEYS.active.public_key
        claims = jwt.decode(
            token, key, algorithms=["EdDSA"], audience="carebase-api", issuer="carebase"
        )
    except (jwt.PyJWTError, KeyError):
        raise HTTPException(401) from None
    async with POOL.connection() as conn, conn.transaction():
        await conn.execute(
            "SELECT set_config('app.current_org_id', %s, true),"
            " set_config('app.current_user_id', %s, true),"
            " set_config('app.current_role', %s, true)",
            (claims["org"], claims["sub"], claims["role"]),
        )
        cursor = await conn.execute(
            "SELECT id, user_id, given_name, family_name, email, status, birth_date_sealed,"
            " national_id_sealed, phone_sealed, address_sealed, notes_sealed, version,"
            " created_at, updated_at FROM patients.patients"
            " WHERE organization_id = %s AND id = %s",
            (claims["org"], patient_id),
        )
        row = await cursor.fetchone()
    if row is None:
        raise HTTPException(404)
    opened = {
        name: SEALER.open(
            sealed, f"patients.patients|{claims['org']}|{patient_id}|{name}".encode()
        ).decode()
        if sealed
        else None
        for name, sealed in zip(SEALED, row[6:11], strict=True)
    }
    return {
        "id": row[0],
        "given_name": row[2],
        "family_name": row[3],
        "email": row[4],
        "status": row[5],
        **opened,
        "user_id": row[1],
        "version": row[11],
        "created_at": row[12],
        "updated_at": row[13],
    }
