"""Clinical PDFs with typst: one layout (`document.typ`), data passed as JSON.

Everything printed travels in `sys.inputs` and is inserted as text, so a title like
`#panic()` prints as written. Fonts come with the typst wheel and system fonts are ignored,
and the document's own time is the PDF's timestamp: the same version of a document gives
the same bytes on any machine. PDF/A-2b, so an archive can keep it.

`render` is CPU work (a few to ~30 ms): it runs in a worker thread, a few at a time, so the
event loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import typst

LAYOUT = Path(__file__).with_name("document.typ")
MEDIA_TYPE = "application/pdf"


@dataclass(frozen=True, slots=True)
class Entry:
    text: str
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Section:
    heading: str | None
    entries: list[Entry]


@dataclass(frozen=True, slots=True)
class Table:
    columns: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True, slots=True)
class SignatureBlock:
    heading: str
    lines: Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Printable:
    """What a PDF shows, already as text."""

    clinic: str
    kind: str
    title: str
    author: str
    status: str | None
    meta: Sequence[tuple[str, str]]
    sections: Sequence[Section] = ()
    table: Table | None = None
    signature: SignatureBlock | None = None
    footer: str = ""
    timestamp: dt.datetime = field(default_factory=lambda: dt.datetime(2000, 1, 1, tzinfo=dt.UTC))


class PdfRenderer:
    def __init__(self, *, concurrency: int = 2) -> None:
        self._slots = asyncio.Semaphore(concurrency)

    async def render(self, printable: Printable) -> bytes:
        async with self._slots:
            return await asyncio.to_thread(render_now, printable)


def render_now(printable: Printable) -> bytes:
    data: Mapping[str, Any] = {
        key: value for key, value in asdict(printable).items() if key != "timestamp"
    }
    pdf = typst.compile(
        str(LAYOUT),
        sys_inputs={"data": json.dumps(data, ensure_ascii=False)},
        pdf_standards=["a-2b"],
        ignore_system_fonts=True,
        timestamp=int(printable.timestamp.timestamp()),
    )
    assert isinstance(pdf, bytes)  # noqa: S101 - one PDF for one input
    return pdf
