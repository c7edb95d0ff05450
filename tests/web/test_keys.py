"""Keys in the browser: usable by the page, never exportable."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.web.conftest import WebServer, register_in_browser


def test_keys_cannot_be_read_by_script(server: WebServer, new_page: Any) -> None:
    watched = new_page()
    page = watched.page
    # The first account (admin): it makes the directory key and a channel key.
    register_in_browser(page, server, "dormouse", "Dormouse")
    page.get_by_label("New channel name").fill("treacle well")
    page.get_by_role("button", name="Create channel").click()
    expect(page.get_by_role("heading", name="# treacle well")).to_be_visible()
    # Whatever runs in the page can find the stored keys, but not export them.
    found = page.evaluate(
        """async () => {
            const db = await new Promise((ok, fail) => {
              const r = indexedDB.open("dialtone"); r.onsuccess = () => ok(r.result);
              r.onerror = () => fail(r.error);
            });
            const all = await new Promise((ok) => {
              const r = db.transaction("kv").objectStore("kv").getAll();
              r.onsuccess = () => ok(r.result);
            });
            const device = all.find((v) => v && v.privateKey);
            const stored = all.filter((v) => v && v.key);
            const tries = [];
            for (const format of ["pkcs8", "jwk", "raw"]) {
              try {
                await crypto.subtle.exportKey(format, device.privateKey);
                tries.push("exported");
              } catch (e) { tries.push(e.name); }
            }
            for (const item of stored) {
              try { await crypto.subtle.exportKey("raw", item.key); tries.push("exported"); }
              catch (e) { tries.push(e.name); }
            }
            const extractable = [device.privateKey.extractable];
            for (const item of stored) extractable.push(item.key.extractable);
            return {extractable, tries, stored: stored.length};
        }"""
    )
    assert found["stored"] == 2  # the directory key and the channel key
    assert not any(found["extractable"])
    assert "exported" not in found["tries"]
