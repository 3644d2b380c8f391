"""List pagination as the contract defines it: `?page=&page_size=` → `{data, meta}`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PageRequest:
    page: int = 1
    page_size: int = 25

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    request: PageRequest

    @property
    def meta(self) -> dict[str, int]:
        size = self.request.page_size
        return {
            "page": self.request.page,
            "page_size": size,
            "total": self.total,
            "total_pages": (self.total + size - 1) // size,
        }
