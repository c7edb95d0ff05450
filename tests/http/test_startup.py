"""Start-up that cannot destroy a community, as real processes: a missing pepper over
existing accounts, owner-only files, a port in use, and an installed wheel."""

from __future__ import annotations

import socket
import sqlite3
import stat
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.http.test_cli import ROOT, Server, clean_env, dialtone, free_port, run_server, start

__all__ = ["start"]  # the fixture, re-used from test_cli


def one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def add_account_row(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO users (id, username_hash, password_hash, is_admin, is_trusted,"
            " created_at) VALUES (?, ?, ?, 1, 1, '2026-01-01 00:00:00.000000')",
            (str(uuid.uuid4()), "ab" * 32, "$argon2id$stand-in"),
        )
    conn.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_missing_pepper_over_existing_accounts_stops_start_up(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = clean_env(DIALTONE_DATA_DIR=str(data), DIALTONE_LISTEN_ADDR=f"127.0.0.1:{free_port()}")
    assert dialtone("migrate", env=env).returncode == 0
    add_account_row(data / "dialtone.db")
    # The pepper file is gone (a restore without it, a wrong folder): no new pepper.
    assert not (data / "username_pepper").exists()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dialtone", "serve"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("dialtone serve started over accounts without their pepper")
    line = one_line_failure(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    assert "pepper" in line
    assert "1 account" in line
    assert not (data / "username_pepper").exists()


def test_pepper_from_the_environment_is_not_refused(tmp_path: Path, start: list[Server]) -> None:
    data = tmp_path / "data"
    env = clean_env(
        DIALTONE_DATA_DIR=str(data),
        DIALTONE_LISTEN_ADDR=f"127.0.0.1:{free_port()}",
        DIALTONE_USERNAME_PEPPER="pepper-from-the-environment-0123",
    )
    assert dialtone("migrate", env=env).returncode == 0
    add_account_row(data / "dialtone.db")
    run_server(start, env)


def test_data_folder_and_database_files_are_owner_only(tmp_path: Path, start: list[Server]) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # an existing, world-readable folder (mkdir's mode obeys the umask)
    db = data / "dialtone.db"
    db.touch()
    db.chmod(0o644)  # an existing database file from an older version
    env = clean_env(DIALTONE_DATA_DIR=str(data), DIALTONE_LISTEN_ADDR=f"127.0.0.1:{free_port()}")
    server = run_server(start, env)
    # A write while serving: the WAL and shared-memory files exist now.
    token = (data / "admin_token").read_text().strip()
    assert server.http.post("/server/invites", headers={"X-Admin-Token": token}).status_code == 201
    assert mode(data) == 0o700
    for name in ("dialtone.db", "dialtone.db-wal", "dialtone.db-shm", "username_pepper"):
        assert (data / name).exists(), name
        assert mode(data / name) == 0o600, (name, oct(mode(data / name)))


def test_migrate_makes_an_existing_folder_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o775)
    result = dialtone("migrate", env=clean_env(DIALTONE_DATA_DIR=str(data)))
    assert result.returncode == 0, result.stderr
    assert mode(data) == 0o700
    assert mode(data / "dialtone.db") == 0o600


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_env(DIALTONE_DATA_DIR=str(tmp_path), DIALTONE_LISTEN_ADDR=f"127.0.0.1:{port}")
        line = one_line_failure(dialtone("serve", env=env, timeout=60))
    assert line.startswith("dialtone: configuration error: cannot listen on 127.0.0.1:")
    assert str(port) in line


def test_built_wheel_migrates_and_serves_outside_the_source_tree(
    tmp_path: Path, start: list[Server]
) -> None:
    """A non-editable install: the wheel's files only, run from a folder that is not the
    repository (the packaged Alembic scripts must be found)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (source / name).write_bytes((ROOT / name).read_bytes())
    for folder in ("dialtone", "migrations"):
        subprocess.run(
            ["cp", "-r", str(ROOT / folder), str(source / folder)], check=True, timeout=60
        )
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("dialtone-*.whl")
    # Every file of the package is in the wheel (templates, static assets), and the
    # migrations/ folder ships as dialtone/migrations.
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("dialtone/")}
    tracked = {
        str(path.relative_to(source))
        for path in (source / "dialtone").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    } | {
        f"dialtone/{path.relative_to(source)}"
        for path in (source / "migrations").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert tracked - shipped == set()
    assert "dialtone/migrations/versions/0001_initial_schema.py" in shipped
    target = tmp_path / "installed"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data = tmp_path / "data"
    env = clean_env(
        PYTHONPATH=str(target),
        DIALTONE_DATA_DIR=str(data),
        DIALTONE_LISTEN_ADDR=f"127.0.0.1:{free_port()}",
    )
    where = subprocess.run(
        [sys.executable, "-c", "import dialtone; print(dialtone.__file__)"],
        env=env, cwd=elsewhere, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(target)), where.stdout
    migrated = subprocess.run(
        [sys.executable, "-m", "dialtone", "migrate"],
        env=env, cwd=elsewhere, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    server = Server(env, f"http://{env['DIALTONE_LISTEN_ADDR']}", cwd=elsewhere)
    start.append(server)
    server.wait_ready()
    assert server.http.get("/health").text == "ok"


def test_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    env = clean_env(
        DIALTONE_DATA_DIR=str(tmp_path),
        DIALTONE_LISTEN_ADDR=f"127.0.0.1:{free_port()}",
        DIALTONE_REDIS_URL=f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0",
        DIALTONE_CLUSTER_SECRET="c" * 40,
        DIALTONE_DB_TIMEOUT="2",
    )
    line = one_line_failure(dialtone("serve", env=env, timeout=60))
    assert line.startswith("dialtone: configuration error: cannot reach Redis at redis://")
    assert "hunter2-secret" not in line


def test_redis_without_cluster_secret_is_one_line(tmp_path: Path) -> None:
    env = clean_env(DIALTONE_DATA_DIR=str(tmp_path), DIALTONE_REDIS_URL="redis://127.0.0.1/0")
    line = one_line_failure(dialtone("serve", env=env, timeout=60))
    assert "DIALTONE_CLUSTER_SECRET" in line
