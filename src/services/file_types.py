"""What an uploaded file is, read from its bytes: the allow-list of attachment types.

The file name and the client's `Content-Type` are never believed: an executable renamed
`scan.pdf` is refused. Each allowed type is recognised by its own signature (the magic bytes
of its specification), so the list is explicit and short; anything else is refused. A small
table rather than libmagic: the allow-list is six types, and libmagic would be a system
dependency that answers for thousands.
"""

from __future__ import annotations

import re
from collections.abc import Callable

PDF = "application/pdf"
PNG = "image/png"
JPEG = "image/jpeg"
HEIC = "image/heic"
DICOM = "application/dicom"
TEXT = "text/plain"

ALLOWED = (PDF, PNG, JPEG, HEIC, DICOM, TEXT)
EXTENSIONS = {PDF: "pdf", PNG: "png", JPEG: "jpg", HEIC: "heic", DICOM: "dcm", TEXT: "txt"}

# ISO base media file format brands of HEIF/HEIC still images (ISO/IEC 23008-12).
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
# Text: UTF-8 with tab, line feed, form feed and carriage return, and no other control byte.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def sniff(data: bytes) -> str | None:
    """The allowed media type `data` is, or None."""
    for media_type, recognises in _SIGNATURES:
        if recognises(data):
            return media_type
    return None


def _is_heif(data: bytes) -> bool:
    size = int.from_bytes(data[0:4], "big")
    box = data[8 : min(size, 64) if size >= 16 else 12]
    brands = [box[0:4]] + [box[i : i + 4] for i in range(8, len(box) - 3, 4)]
    return any(brand in _HEIF_BRANDS for brand in brands)


def _is_text(data: bytes) -> bool:
    if not data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _CONTROL.search(data) is None


# In order: binary signatures first; text last (a PDF is text-like at its start).
_SIGNATURES: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    (PDF, lambda data: data.startswith(b"%PDF-")),
    (PNG, lambda data: data.startswith(b"\x89PNG\r\n\x1a\n")),
    (JPEG, lambda data: data.startswith(b"\xff\xd8\xff")),
    (HEIC, lambda data: len(data) >= 12 and data[4:8] == b"ftyp" and _is_heif(data)),
    # DICOM Part 10: a 128-byte preamble, then "DICM".
    (DICOM, lambda data: len(data) >= 132 and data[128:132] == b"DICM"),
    (TEXT, _is_text),
)
