"""Dialtone: a self-hosted, end-to-end encrypted community chat server."""

__version__ = "0.1.0"
