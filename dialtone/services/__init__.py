"""Use cases and rules. Nothing here imports Litestar."""
