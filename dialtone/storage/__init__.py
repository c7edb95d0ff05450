"""Where file bytes live: a small interface and the local-folder backend."""

from dialtone.storage.base import BodyTooLong, BodyTooShort, FileStorage, Stored
from dialtone.storage.local import LocalStorage

__all__ = ["BodyTooLong", "BodyTooShort", "FileStorage", "LocalStorage", "Stored"]
