"""The deployment docs/OPERATIONS.md describes, run for real: nginx from Debian terminating
TLS (a CA made here) in front of two `dialtone serve` nodes on PostgreSQL and Redis.

The nginx configuration is read out of docs/OPERATIONS.md; only the listen address, the
node addresses and the certificate paths are replaced. Clients connect from distinct
loopback addresses (127.0.0.2, 127.0.0.3), so the nodes must see each client's own
address through X-Forwarded-For for the rate limit and the ban to hold.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from dialtone.config import normalise_db_url
from tests.conftest import ADMIN_TOKEN, CLUSTER_SECRET, PEPPER, PG_URL, REDIS_URL, _pg_admin
from tests.e2ee import DeviceKeys
from tests.http.test_cli import clean_env, free_port
from tests.web.conftest import PASSWORD, Browser, browser, expect, playwright

__all__ = ["browser", "playwright"]  # the browser fixtures of tests/web, used here too

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ATTACKER = "127.0.0.2"
MEMBER = "127.0.0.3"

pytestmark = [
    pytest.mark.skipif(not Path(NGINX).exists(), reason="no nginx: run `make browser-deps`"),
    pytest.mark.skipif(not PG_URL, reason="the deployment runs on DIALTONE_TEST_DATABASE_URL"),
    pytest.mark.skipif(not REDIS_URL, reason="the deployment runs on DIALTONE_TEST_REDIS_URL"),
]


def documented_nginx_config() -> str:
    """The nginx block of docs/OPERATIONS.md that holds the upstream of two nodes."""
    text = (ROOT / "docs" / "OPERATIONS.md").read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", text, re.S)
    matching = [b for b in blocks if "upstream dialtone" in b]
    assert len(matching) == 1, "docs/OPERATIONS.md has one nginx deployment block"
    return matching[0]


# ---------------------------------------------------------------- a CA and a certificate


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Dialtone test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "fullchain.pem", folder / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


# ---------------------------------------------------------------- the deployment


@dataclass
class Deployment:
    base: str  # https through nginx
    nodes: list[str]  # each node's own http address
    ca: Path
    ws_url: str

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def client(self, source: str) -> httpx.AsyncClient:
        """An HTTPS client whose connections come from ``source`` (a loopback address)."""
        transport = httpx.AsyncHTTPTransport(local_address=source, verify=self.tls())
        return httpx.AsyncClient(base_url=self.base, transport=transport, timeout=20)


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, **kw: Any) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url, timeout=2, **kw).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)  # start-up only: the port is not open yet
    raise AssertionError(f"{url} did not answer")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("deploy")
    base_url = normalise_db_url(PG_URL)
    name = f"dialtone_deploy_{secrets.token_hex(4)}"
    db_url = base_url.rsplit("/", 1)[0] + "/" + name
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"', base_url))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        common = {
            "DIALTONE_DB_URL": db_url,
            "DIALTONE_REDIS_URL": REDIS_URL,
            "DIALTONE_REDIS_PREFIX": f"dialtone-deploy-{secrets.token_hex(4)}:",
            "DIALTONE_CLUSTER_SECRET": CLUSTER_SECRET,
            "DIALTONE_USERNAME_PEPPER": PEPPER.decode(),
            "DIALTONE_ADMIN_TOKEN": ADMIN_TOKEN,
            "DIALTONE_TRUSTED_PROXIES": "127.0.0.1",
            "DIALTONE_LOG_LEVEL": "warning",
            # One files folder for both nodes, as the docs say (a shared mount).
            "DIALTONE_FILES_DIR": str(folder / "files"),
        }
        # As the docs say: migrate once, then start the nodes.
        migrate = subprocess.run(
            [sys.executable, "-m", "dialtone", "migrate"],
            env=clean_env(DIALTONE_DATA_DIR=str(folder / "migrate"), **common),
            cwd=ROOT,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert migrate.returncode == 0, migrate.stderr
        nodes = []
        for index in (1, 2):
            port = free_port()
            log = folder / f"node{index}.log"
            env = clean_env(
                DIALTONE_DATA_DIR=str(folder / f"node{index}"),
                DIALTONE_LISTEN_ADDR=f"127.0.0.1:{port}",
                **common,
            )
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "dialtone", "serve"],
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=out,
                )
            procs.append(proc)
            nodes.append(f"127.0.0.1:{port}")
        for node, proc, index in zip(nodes, procs, (1, 2), strict=True):
            wait_http(f"http://{node}/health/ready", proc, folder / f"node{index}.log")

        ca, cert, key = make_certificates(folder)
        port = free_port()
        site = documented_nginx_config()
        for placeholder, value in (
            ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
            ("127.0.0.1:8081", nodes[0]),
            ("127.0.0.1:8082", nodes[1]),
            ("/etc/ssl/dialtone/fullchain.pem", str(cert)),
            ("/etc/ssl/dialtone/privkey.pem", str(key)),
        ):
            assert placeholder in site, placeholder
            site = site.replace(placeholder, value)
        (folder / "dialtone.conf").write_text(site)
        for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (folder / temp).mkdir()
        # The parts /etc/nginx/nginx.conf holds on a real machine, pointed at this folder.
        (folder / "nginx.conf").write_text(
            f"""
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {folder}/nginx-access.log;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/dialtone.conf;
}}
"""
        )
        check = subprocess.run(
            [NGINX, "-t", "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", "stderr"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stderr
        nginx_log = folder / "nginx-error.log"
        proc = subprocess.Popen(
            [
                NGINX,
                "-p",
                str(folder),
                "-c",
                str(folder / "nginx.conf"),
                "-e",
                str(nginx_log),
                "-g",
                "daemon off;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        nginx_log.touch()
        base = f"https://127.0.0.1:{port}"
        wait_http(f"{base}/health", proc, nginx_log, verify=ssl.create_default_context(cafile=ca))
        yield Deployment(base=base, nodes=nodes, ca=ca, ws_url=f"wss://127.0.0.1:{port}/ws")
    finally:
        for proc in reversed(procs):
            stop(proc)
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', base_url))


# ---------------------------------------------------------------- clients


@dataclass
class Person:
    token: str
    user_id: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def sign_up(http: httpx.AsyncClient, username: str) -> Person:
    invite = await http.post("/server/invites", headers={"X-Admin-Token": ADMIN_TOKEN})
    assert invite.status_code == 201, invite.text
    keys = DeviceKeys()
    body = {
        "username": username,
        "password": "password1",
        "public_key": keys.public_b64,
        "invite_token": invite.json()["token"],
    }
    registered = await http.post("/auth/register", json=body)
    assert registered.status_code == 201, registered.text
    return Person(registered.json()["token"], registered.json()["user_id"])


async def recv(ws: ClientConnection, within: float = 20) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), within))
    return value


async def next_of(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        event = await recv(ws)
        if event["type"] == kind:
            return event


async def open_socket(d: Deployment, person: Person) -> ClientConnection:
    ws = await connect(
        d.ws_url,
        ssl=d.tls(),
        additional_headers=person.auth,
        open_timeout=20,
    )
    assert (await recv(ws))["type"] == "voice.presence.snapshot"
    assert (await recv(ws))["type"] == "server.hello"
    return ws


async def say(ws: ClientConnection, channel_id: str, text: str) -> None:
    body = base64.b64encode(text.encode()).decode()
    frame = {"type": "channel.message.send", "channel_id": channel_id, "body": body,
             "sender_name_enc": "bg=="}  # fmt: skip
    await ws.send(json.dumps(frame))


@pytest.fixture
async def member_http(deployment: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    async with deployment.client(MEMBER) as http:
        yield http


# ---------------------------------------------------------------- the session


async def test_a_file_goes_through_nginx_and_both_nodes_serve_it(
    deployment: Deployment, member_http: httpx.AsyncClient
) -> None:
    """Larger than nginx's 1m default: the /files location lets it through, streamed."""
    alice = await sign_up(member_http, f"alice{secrets.token_hex(3)}")
    created = await member_http.post("/channels", json={"name_enc": "bmFtZQ=="}, headers=alice.auth)
    if created.status_code == 403:  # not the first account of the database: make it admin
        patched = await member_http.patch(
            f"/admin/users/{alice.user_id}",
            json={"is_admin": True},
            headers={"X-Admin-Token": ADMIN_TOKEN},
        )
        assert patched.status_code == 200, patched.text
        created = await member_http.post(
            "/channels", json={"name_enc": "bmFtZQ=="}, headers=alice.auth
        )
    assert created.status_code == 201, created.text
    channel = created.json()["channel"]["id"]
    blob = os.urandom(3 * 1024 * 1024)
    uploaded = await member_http.post(
        f"/files?channel_id={channel}", content=blob, headers=alice.auth
    )
    assert uploaded.status_code == 201, uploaded.text
    file_id = uploaded.json()["id"]
    for node in deployment.nodes:
        async with httpx.AsyncClient(base_url=f"http://{node}") as direct:
            got = await direct.get(f"/files/{file_id}", headers=alice.auth)
        assert got.status_code == 200
        assert got.content == blob
    through = await member_http.get(
        f"/files/{file_id}", headers=alice.auth | {"Range": "bytes=1048576-"}
    )
    assert through.status_code == 206
    assert through.content == blob[1048576:]
    assert through.headers["content-disposition"] == "attachment"


async def test_a_whole_session_through_nginx(
    deployment: Deployment, member_http: httpx.AsyncClient
) -> None:
    http = member_http
    admin = await sign_up(http, f"admin{secrets.token_hex(3)}")
    bob = await sign_up(http, f"bob{secrets.token_hex(3)}")
    created = await http.post("/channels", json={"name_enc": "bmFtZQ=="}, headers=admin.auth)
    if created.status_code == 403:  # not the first account of the database: make it admin
        patched = await http.patch(
            f"/admin/users/{admin.user_id}",
            json={"is_admin": True},
            headers={"X-Admin-Token": ADMIN_TOKEN},
        )
        assert patched.status_code == 200, patched.text
        created = await http.post("/channels", json={"name_enc": "bmFtZQ=="}, headers=admin.auth)
    assert created.status_code == 201, created.text
    channel = created.json()["channel"]["id"]

    # Four sockets opened one after the other: nginx spreads them over both nodes.
    sockets = [await open_socket(deployment, p) for p in (admin, bob, admin, bob)]
    try:
        await say(sockets[1], channel, "hello through nginx")
        for ws in sockets:
            event = await next_of(ws, "channel.message.new")
            assert event["channel_id"] == channel

        # Drain the first node, addressed directly as the docs say.
        async with httpx.AsyncClient(base_url=f"http://{deployment.nodes[0]}") as direct:
            drained = await direct.post("/admin/drain", headers={"X-Admin-Token": ADMIN_TOKEN})
        assert drained.status_code == 200, drained.text
        closed = drained.json()["closed_sockets"]
        # Some sockets were on each node: the message above crossed nodes through Redis.
        assert 0 < closed < len(sockets), closed

        moved: list[int] = []
        codes: list[int | None] = []
        for index, ws in enumerate(sockets):
            try:
                await recv(ws, within=0.5)
            except ConnectionClosed as gone:
                codes.append(gone.rcvd.code if gone.rcvd else None)
                moved.append(index)
            except TimeoutError:
                pass
        assert len(moved) == closed
        assert codes == [1012] * closed
        # The closed clients reconnect through nginx and land on the other node.
        for index in moved:
            person = admin if index % 2 == 0 else bob
            sockets[index] = await open_socket(deployment, person)
        await say(sockets[0], channel, "after the drain")
        for ws in sockets:
            event = await next_of(ws, "channel.message.new")
            assert event["channel_id"] == channel
    finally:
        for ws in sockets:
            await ws.close()


async def test_the_web_page_keeps_its_headers(
    deployment: Deployment, member_http: httpx.AsyncClient
) -> None:
    page = await member_http.get("/")
    assert page.status_code == 200
    async with httpx.AsyncClient(base_url=f"http://{deployment.nodes[1]}") as direct:
        original = await direct.get("/")
    csp = page.headers["content-security-policy"]
    assert csp == original.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    # Every script the page loads comes through too.
    for src in re.findall(r'src="([^"]+)"', page.text):
        asset = await member_http.get(src)
        assert asset.status_code == 200, src


async def test_rate_limits_and_bans_see_each_clients_address(
    deployment: Deployment, member_http: httpx.AsyncClient
) -> None:
    async with deployment.client(ATTACKER) as attacker:
        # A forged X-Forwarded-For is replaced by nginx: it changes nothing.
        forged = {"X-Admin-Token": "wrong-token-0123456789", "X-Forwarded-For": MEMBER}
        statuses = [
            (await attacker.post("/server/invites", headers=forged)).status_code for _ in range(40)
        ]
        assert 429 in statuses, statuses
        # The member's address has its own bucket: the right token still works from there.
        right = await member_http.post("/server/invites", headers={"X-Admin-Token": ADMIN_TOKEN})
        assert right.status_code == 201, right.text

        ban = await member_http.post(
            "/admin/bans",
            json={"address": f"{ATTACKER}/32", "comment": "test"},
            headers={"X-Admin-Token": ADMIN_TOKEN},
        )
        assert ban.status_code == 201, ban.text
        # The ban reaches both nodes (over Redis); two requests in a row meet both.
        deadline = time.monotonic() + 30
        while True:
            answers = [(await attacker.get("/server/info")).status_code for _ in range(2)]
            if answers == [403, 403]:
                break
            assert time.monotonic() < deadline, answers
            await asyncio.sleep(0.05)  # the ban event is on its way to the other node
        assert (await member_http.get("/server/info")).status_code == 200
        assert (await member_http.get("/server/info")).status_code == 200


def test_the_page_runs_under_its_policy_through_nginx(
    deployment: Deployment, browser: Browser
) -> None:
    """Sign up in Chromium through nginx: scripts, styles and the wss socket all pass the
    page's Content-Security-Policy (a violation is a console error)."""
    with httpx.Client(base_url=deployment.base, verify=deployment.tls()) as http:
        invite = http.post("/server/invites", headers={"X-Admin-Token": ADMIN_TOKEN})
    assert invite.status_code == 201, invite.text
    context = browser.new_context(ignore_https_errors=True)
    errors: list[str] = []
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(f"{deployment.base}/#invite={invite.json()['token']}")
        page.get_by_label("Username").fill(f"carol{secrets.token_hex(3)}")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_label("Display name").fill("Carol")
        page.get_by_role("button", name="Create account").click()
        expect(page.locator(".conn")).to_have_text("Connected")
    finally:
        context.close()
    assert not [e for e in errors if "Content Security Policy" in e or "Refused" in e], errors


def test_the_nginx_config_is_the_documented_one() -> None:
    site = documented_nginx_config()
    for needed in (
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_next_upstream error timeout http_502 http_503;",
    ):
        assert needed in site
