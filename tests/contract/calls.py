"""How the contract tests send a generated case: as a caller, within what HTTP itself allows."""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.transport.prepare import get_exclude_headers

# Headers that frame the message, which the HTTP server (uvicorn) checks before the app is
# called: a malformed Content-Length is refused there with its own text/plain 400, which
# no contract can describe. Generated values for them test the server's parser, not ours.
FRAMING_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "host", "connection", "expect", "te", "upgrade"}
)


def call_and_validate(case: schemathesis.Case[Any], base_url: str, auth: dict[str, str]) -> None:
    """Send the case as the caller `auth` names and run every check on the answer.

    The caller's credentials are written into the case too, so the checks judge the request
    as sent. Schemathesis leaves out a header a negative case removed only when the header
    location alone was mutated; when a case also mutates the query, the caller's token went
    out while the check still expected the missing header refused (a false "accepted
    negative data"). Headers schemathesis will leave out stay out."""
    left_out = {name.lower() for name in get_exclude_headers(case)}
    credentials = {} if left_out & {name.lower() for name in auth} else auth
    dropped = FRAMING_HEADERS | {name.lower() for name in credentials}
    kept = {k: v for k, v in (case.headers or {}).items() if k.lower() not in dropped}
    case.headers = kept | credentials
    case.call_and_validate(base_url=base_url, headers=auth)
