"""Clients of systems outside Carebase: mail (and later video, blob stores, message providers)."""
