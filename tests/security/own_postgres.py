"""A throwaway PostgreSQL cluster of the test's own (initdb on a free port, run as the
``postgres`` user), so a test may freeze it with SIGSTOP or restart it in a state that
refuses connections, without touching the shared server on 5432."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _bin_dir() -> Path | None:
    root = Path("/usr/lib/postgresql")
    versions = sorted(root.iterdir(), key=lambda p: p.name) if root.is_dir() else []
    for version in reversed(versions):
        if (version / "bin" / "initdb").exists():
            return version / "bin"
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class OwnPostgres:
    def __init__(self, folder: Path, port: int, bin_dir: Path, user: pwd.struct_passwd) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = port
        self.bin = bin_dir
        self.user = user

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        user = self.user

        def drop() -> None:
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

        return subprocess.run(
            args,
            preexec_fn=drop if os.geteuid() == 0 else None,
            capture_output=True,
            check=check,
            timeout=120,
            cwd=self.folder,
        )

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def start(self, *options: str) -> None:
        settings = " ".join(
            (
                f"-p {self.port} -c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.folder}",
                "-c fsync=off",
                *options,
            )
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            settings,
            "-l",
            str(self.folder / "log"),
            "-w",
            "-t",
            "60",
            "start",
            # A standby that refuses connections never becomes "ready": pg_ctl's wait
            # then ends with an error although the server runs.
            check=not options,
        )

    def stop(self) -> None:
        self.resume()
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def start_refusing(self) -> None:
        """Start as a standby without hot standby: every connection is refused with
        SQLSTATE 57P03, as while PostgreSQL starts up or recovers."""
        (self.data / "standby.signal").touch()
        shutil.chown(self.data / "standby.signal", self.user.pw_uid, self.user.pw_gid)
        self.start("-c hot_standby=off")

    def start_normally(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.data / "standby.signal").unlink()
        self.start()

    def pids(self) -> list[int]:
        """The postmaster and every process it started."""
        pid_file = self.data / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0])
        children = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == postmaster:
                    children.append(int(entry.name))
        return [postmaster, *children]

    def freeze(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def own_postgres_cluster(port: int, tmpfs_size: str | None = None) -> Iterator[OwnPostgres]:
    """A running cluster; with ``tmpfs_size``, on a tmpfs of that size (a disk that can
    be filled; skipped where mounting is not permitted)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL's initdb is not installed")
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user to run a cluster as")
    if os.geteuid() not in (0, user.pw_uid):
        pytest.skip("a cluster of the test's own needs root or the postgres user")
    folder = Path(tempfile.mkdtemp(prefix="dialtone-pg-"))
    mounted = False
    if tmpfs_size is not None:
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={tmpfs_size}", "tmpfs", str(folder)],
            capture_output=True,
            check=False,
        )
        if mount.returncode != 0:
            folder.rmdir()
            pytest.skip(f"cannot mount a small tmpfs here: {mount.stderr.decode().strip()}")
        mounted = True
    shutil.chown(folder, user.pw_uid, user.pw_gid)
    cluster = OwnPostgres(folder, port, bin_dir, user)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop()
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        shutil.rmtree(folder, ignore_errors=True)
