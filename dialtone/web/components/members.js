// A private room's members (issue 16): the channel header's Members and Leave buttons, and
// the members dialog: who is in the room, invite someone, remove someone (owners and
// admins), leave.
import { mayManage } from "../rooms.js";
import { h } from "./dom.js";

// The mark before a channel's name: # public, 🔒 private room, @ direct message.
export function roomMark(ch) {
  return ch.direct ? "@" : ch.private ? "🔒" : "#";
}

// Buttons for the channel header of a private room (none for public channels and DMs).
export function roomActions(client, ch) {
  if (!ch.private || ch.direct) return [];
  const name = client.channelName(ch);
  return [
    h("button", { type: "button", "aria-label": `Members of ${name}`, onclick: () => openMembers(client, ch.id) }, "Members"),
    h("button", { type: "button", class: "danger", "aria-label": `Leave ${name}`, onclick: () => confirmLeave(client, ch.id) }, "Leave"),
  ];
}

function confirmLeave(client, channelId) {
  const ch = client.channels.get(channelId);
  if (!ch) return;
  const dialog = h("dialog", { class: "card", "aria-labelledby": "leave-title" });
  const error = h("p", { class: "form-error", role: "alert" });
  dialog.append(h("form", { method: "dialog" },
    h("h2", { id: "leave-title" }, `Leave ${client.channelName(ch)}?`),
    h("p", {}, "You stop receiving its messages. A member of the room can add you again."),
    error,
    h("div", { class: "row" },
      h("button", { type: "submit", value: "ok", class: "danger" }, "Leave room"),
      h("button", { type: "submit", value: "cancel" }, "Cancel"))));
  document.body.append(dialog);
  dialog.addEventListener("close", async () => {
    dialog.remove();
    if (dialog.returnValue !== "ok") return;
    try {
      await client.rooms.leave(channelId);
      location.hash = "#/";
    } catch {
      // Said by the client's notice.
    }
  });
  dialog.showModal();
}

// The members dialog of a room; it follows channel.member.added / removed while open.
export function openMembers(client, channelId) {
  const dialog = h("dialog", { class: "card members-dialog", "aria-labelledby": "members-title" });
  const title = h("h2", { id: "members-title" });
  const list = h("ul", { class: "members", "aria-label": "Members" });
  const invite = h("div", { class: "invite-member" });
  const error = h("p", { class: "form-error", role: "alert" });
  const close = h("button", { type: "button", onclick: () => dialog.close() }, "Close");
  dialog.append(title, list, invite, error, h("div", { class: "row" }, close));
  document.body.append(dialog);

  const run = async (action) => {
    error.textContent = "";
    try {
      await action();
    } catch (e) {
      error.textContent = e.friendly || e.message;
    }
  };

  let members = [];
  const render = () => {
    const ch = client.channels.get(channelId);
    if (!ch) {
      dialog.close();
      return;
    }
    const manage = mayManage(ch, client.canManageChannels);
    title.textContent = `Members of ${client.channelName(ch)}`;
    const named = members.map((m) => ({ ...m, name: client.nameOf(m.user_id) })).sort((a, b) => a.name.localeCompare(b.name));
    list.replaceChildren(...named.map((m) => {
      const me = m.user_id === client.me.id;
      return h("li", { "data-user-id": m.user_id },
        h("span", { class: "name" }, m.name, me ? " (you)" : ""),
        m.role === "owner" ? h("span", { class: "tag" }, "owner") : null,
        manage && !me
          ? h("button", { type: "button", class: "link danger", "aria-label": `Remove ${m.name} from the room`,
              onclick: () => run(async () => {
                await client.rooms.remove(channelId, m.user_id);
                members = members.filter((x) => x.user_id !== m.user_id);
                render();
              }) }, "Remove")
          : null);
    }));
    if (!manage) {
      invite.replaceChildren();
      return;
    }
    const inRoom = new Set(members.map((m) => m.user_id));
    const others = client.knownUsers().filter((id) => !inRoom.has(id)).sort((a, b) => client.nameOf(a).localeCompare(client.nameOf(b)));
    const select = h("select", { id: "invite-who", name: "who" }, others.map((id) => h("option", { value: id }, client.nameOf(id))));
    invite.replaceChildren(others.length
      ? h("form", { class: "row", onsubmit: (e) => {
          e.preventDefault();
          run(async () => {
            await client.rooms.invite(channelId, select.value); // its "members" event reloads the list
          });
        } },
          h("label", { for: "invite-who" }, "Invite"), select, h("button", { type: "submit", class: "primary" }, "Add to the room"))
      : h("p", { class: "hint" }, "Everyone is in this room already."));
  };
  const load = async () => {
    await run(async () => {
      ({ members } = await client.rooms.members(channelId));
    });
    render();
  };
  const offs = [
    client.on("members", (id) => { if (id === channelId) load(); }),
    client.on("people", () => render()),
    client.on("channels", () => render()),
  ];
  dialog.addEventListener("close", () => {
    for (const off of offs) off();
    dialog.remove();
  });
  render();
  load();
  dialog.showModal();
  return dialog;
}
