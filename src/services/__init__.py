"""Business rules and transaction boundaries, one module per bounded context."""
