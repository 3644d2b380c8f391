"""Pydantic models generated from the bundled specs — do not edit."""
