"""One composition root per service: `core` (and, with telemetry, `telemetry`); `common` holds
what they share."""
