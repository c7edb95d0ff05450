from __future__ import annotations

import msgspec


class FileOut(msgspec.Struct):
    id: str
    size: int  # bytes stored (the ciphertext)
    sha256: str  # hex of the stored bytes
    created_at: str
