from __future__ import annotations

from typing import Annotated

import msgspec

# The blob is standard base64 of a client-encrypted JSON document; the server checks only
# that it is base64 within DIALTONE_KEY_BACKUP_MAX_BYTES (see services/key_backups.py).
BackupText = Annotated[str, msgspec.Meta(min_length=1)]
Version = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]


class KeyBackupIn(msgspec.Struct, forbid_unknown_fields=True):
    backup: BackupText
    version: Version


class KeyBackupOut(msgspec.Struct):
    backup: str
    version: int


class KeyBackupVersion(msgspec.Struct):
    version: int
