"""Handlers of the core service, one module per spec module in openapi/core/."""
