"""Every model, imported so Base.metadata knows the whole schema."""

from dialtone.db.models.admin import Ban, ServerLogEntry, ServerSetting
from dialtone.db.models.channel import (
    Channel,
    ChannelKeyEnvelope,
    ChannelMember,
    ChannelMessage,
)
from dialtone.db.models.device import Device
from dialtone.db.models.directory import DirectoryKeyEnvelope
from dialtone.db.models.file import StoredFile
from dialtone.db.models.health import HealthProbe
from dialtone.db.models.invite import Invite
from dialtone.db.models.key_backup import KeyBackup
from dialtone.db.models.key_version import ChannelKeyVersion
from dialtone.db.models.profile import UserProfile
from dialtone.db.models.session import Session
from dialtone.db.models.social import UserBlock, UserPreferences
from dialtone.db.models.user import User

__all__ = [
    "Ban",
    "Channel",
    "ChannelKeyEnvelope",
    "ChannelKeyVersion",
    "ChannelMember",
    "ChannelMessage",
    "Device",
    "DirectoryKeyEnvelope",
    "HealthProbe",
    "Invite",
    "KeyBackup",
    "ServerLogEntry",
    "ServerSetting",
    "Session",
    "StoredFile",
    "User",
    "UserBlock",
    "UserPreferences",
    "UserProfile",
]
