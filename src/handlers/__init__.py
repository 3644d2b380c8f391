"""Thin HTTP adapters: parse into generated models, call one service, map the result."""
