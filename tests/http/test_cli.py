"""`dialtone serve | migrate | invite create` as real processes on free ports."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dialtone.db.migrate import newest_revision
from tests.e2ee import DeviceKeys

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALTONE_")}
    env.update(values)
    return env


def dialtone(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dialtone", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Server:
    def __init__(
        self,
        env: dict[str, str],
        base_url: str,
        verify: ssl.SSLContext | bool = True,
        cwd: Path = ROOT,
    ):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dialtone", "serve"],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, verify=verify, timeout=5)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError(f"server exited {self.proc.returncode}: {out}\n{err}")
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("server did not become ready")

    def stop(self) -> tuple[str, str]:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            out, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return out, err


@pytest.fixture
def start() -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.stop()


def run_server(
    servers: list[Server], env: dict[str, str], scheme: str = "http", **kw: object
) -> Server:
    host, _, port = env["DIALTONE_LISTEN_ADDR"].rpartition(":")
    server = Server(env, f"{scheme}://{host}:{port}", **kw)  # type: ignore[arg-type]
    servers.append(server)
    server.wait_ready()
    return server


def test_serve_first_run_then_second_run(tmp_path: Path, start: list[Server]) -> None:
    data = tmp_path / "data"
    env = clean_env(DIALTONE_LISTEN_ADDR=f"127.0.0.1:{free_port()}", DIALTONE_DATA_DIR=str(data))
    server = run_server(start, env)
    response = server.http.get("/health")
    assert response.text == "ok"
    # Over a real socket, junk still gets JSON errors. (On a route that needs a session,
    # the missing credentials are answered first, before the body is read: issue 18.)
    junk = b"x" * (2 * 1024 * 1024)
    too_big = server.http.post(
        "/auth/register", content=junk, headers={"Content-Type": "application/json"}
    )
    assert too_big.status_code == 413
    assert "error" in too_big.json()
    signed_out = server.http.post(
        "/channels", content=junk, headers={"Content-Type": "application/json"}
    )
    assert signed_out.status_code == 401
    assert signed_out.json()["code"] == "unauthorized"
    assert server.http.get("/nope").json()["error"]
    out, err = server.stop()
    token = (data / "admin_token").read_text().strip()
    assert out.count(token) == 1, out
    assert token not in err
    assert "Traceback" not in err
    assert (data / "dialtone.db").exists()

    env["DIALTONE_LISTEN_ADDR"] = f"127.0.0.1:{free_port()}"
    server = run_server(start, env)
    invite = server.http.post("/server/invites", headers={"X-Admin-Token": token})
    assert invite.status_code == 201
    out, _ = server.stop()
    assert token not in out  # printed once, on the first run only
    assert str(data / "admin_token") in out


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("DIALTONE_LISTEN_ADDR", "not-an-address"),
        ("DIALTONE_SESSION_TTL", "forever"),
        ("DIALTONE_DB_URL", "mysql://x@y/z"),
        ("DIALTONE_TLS_CERT", "/does/not/exist"),
    ],
)
def test_bad_setting_exits_with_one_line(tmp_path: Path, setting: str, value: str) -> None:
    env = clean_env(DIALTONE_DATA_DIR=str(tmp_path), **{setting: value})
    result = dialtone("serve", env=env, timeout=30)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("dialtone: configuration error:")


def test_bad_certificate_exits_with_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    env = clean_env(
        DIALTONE_DATA_DIR=str(tmp_path),
        DIALTONE_LISTEN_ADDR=f"127.0.0.1:{free_port()}",
        DIALTONE_TLS_CERT=str(junk),
        DIALTONE_TLS_KEY=str(junk),
    )
    result = dialtone("serve", env=env, timeout=30)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "DIALTONE_TLS_CERT" in lines[0]


def test_unreachable_database_exits_with_one_line(tmp_path: Path) -> None:
    env = clean_env(
        DIALTONE_DATA_DIR=str(tmp_path),
        DIALTONE_LISTEN_ADDR=f"127.0.0.1:{free_port()}",
        DIALTONE_DB_URL=f"postgres://nobody@127.0.0.1:{free_port()}/none?sslmode=disable",
        DIALTONE_DB_TIMEOUT="2",
    )
    result = dialtone("serve", env=env, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "database" in lines[0]


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / "cert.pem"
    key_path = tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_serve_tls(tmp_path: Path, start: list[Server]) -> None:
    cert, key = self_signed(tmp_path)
    env = clean_env(
        DIALTONE_LISTEN_ADDR=f"127.0.0.1:{free_port()}",
        DIALTONE_DATA_DIR=str(tmp_path / "data"),
        DIALTONE_TLS_CERT=str(cert),
        DIALTONE_TLS_KEY=str(key),
    )
    context = ssl.create_default_context(cafile=str(cert))
    server = run_server(start, env, scheme="https", verify=context)
    response = server.http.get("/health")
    assert response.status_code == 200
    assert response.text == "ok"
    with pytest.raises(httpx.TransportError):
        httpx.get(server.base_url.replace("https", "http") + "/health", timeout=3)


def test_migrate_command(tmp_path: Path) -> None:
    env = clean_env(DIALTONE_DATA_DIR=str(tmp_path / "data"))
    head = newest_revision()
    result = dialtone("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "dialtone.db").exists()
    assert result.stdout == (
        f"dialtone: database migrated from revision base (empty) to {head} (the newest)\n"
    )
    result = dialtone("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"dialtone: database already at revision {head} (the newest)\n"
    result = dialtone("migrate", "--revision", "base", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"dialtone: database migrated from revision {head} to base (empty)\n"
    result = dialtone("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(f"to {head} (the newest)\n")


def test_invite_create_registers_against_running_server(
    tmp_path: Path, start: list[Server]
) -> None:
    data = tmp_path / "data"
    env = clean_env(DIALTONE_LISTEN_ADDR=f"127.0.0.1:{free_port()}", DIALTONE_DATA_DIR=str(data))
    server = run_server(start, env)
    result = dialtone("invite", "create", env=env)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert len(token) >= 32
    assert "\n" not in token
    body = {
        "username": "alice",
        "password": "password1",
        "public_key": DeviceKeys().public_b64,
        "invite_token": token,
    }
    response = server.http.post("/auth/register", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["is_admin"] is True
    again = server.http.post("/auth/register", json={**body, "username": "bob"})
    assert again.status_code == 410


def test_json_logs(tmp_path: Path, start: list[Server]) -> None:
    env = clean_env(
        DIALTONE_LISTEN_ADDR=f"127.0.0.1:{free_port()}",
        DIALTONE_DATA_DIR=str(tmp_path),
        DIALTONE_LOG_FORMAT="json",
    )
    server = run_server(start, env)
    assert server.http.get("/channels").status_code == 401
    admin_token = (tmp_path / "admin_token").read_text().strip()
    invite = server.http.post("/server/invites", headers={"X-Admin-Token": admin_token})
    body = {
        "username": "secretname",
        "password": "secretpass1",
        "public_key": DeviceKeys().public_b64,
        "invite_token": invite.json()["token"],
    }
    token = server.http.post("/auth/register", json=body).json()["token"]
    server.http.post(
        "/channels", json={"name_enc": "sealedname"}, headers={"Authorization": f"Bearer {token}"}
    )
    _, err = server.stop()
    for secret in (
        "secretname",
        "secretpass1",
        token,
        body["invite_token"],
        "sealedname",
        admin_token,
    ):
        assert secret not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "the server logged nothing"
    for line in lines:
        entry = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= set(entry)
        assert "color_message" not in entry  # uvicorn's terminal-coloured duplicate
