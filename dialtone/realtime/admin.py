"""Administration events as every node applies them: bans, kicks, live settings.

The hub hands each ``AdminControl`` event here, in broker order, on every node (the
node that made the change included). Applying is synchronous and in memory, so by
the time a later event of the same batch reaches the sockets, the change holds.
"""

from __future__ import annotations

import logging

from dialtone.realtime.hub import CLOSE_POLICY, Hub
from dialtone.schemas.events import (
    AdminControl,
    BanAdded,
    BanRemoved,
    DirectoryCommitmentSet,
    DisconnectUsers,
    SettingsChanged,
)
from dialtone.services.admin import rule_from_event
from dialtone.services.bans import parse_ip
from dialtone.services.context import ServerContext

log = logging.getLogger("dialtone.realtime")


class AdminEvents:
    def __init__(self, ctx: ServerContext, hub: Hub) -> None:
        self.ctx = ctx
        self.hub = hub

    def __call__(self, event: AdminControl) -> None:
        match event:
            case BanAdded():
                rule = rule_from_event(event)
                self.ctx.bans.add(rule)
                for conn in list(self.hub.conns.values()):
                    ip = parse_ip(conn.address) if rule.network is not None else None
                    if conn.user_id == rule.user_id or (
                        ip is not None
                        and rule.network is not None
                        and ip.version == rule.network.version
                        and ip in rule.network
                    ):
                        conn.close(CLOSE_POLICY, "banned")
            case BanRemoved(id=ban_id):
                self.ctx.bans.remove(ban_id)
            case DisconnectUsers(user_ids=user_ids, reason=reason, code=code):
                for user_id in user_ids:
                    for conn in list(self.hub.of_user(user_id)):
                        conn.close(code, reason)
            case SettingsChanged(values=values):
                self.ctx.apply_settings({**self.ctx.live_settings.values, **values})
            case DirectoryCommitmentSet(key_commitment=value):
                self.ctx.note_directory_commitment(value)
            case _:
                log.warning("no handler for admin event %s", type(event).__name__)
