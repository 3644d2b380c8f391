"""Carebase: a contract-first, multi-tenant platform API for rehabilitation clinics."""

__version__ = "0.1.0"
