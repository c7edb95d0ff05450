"""Consistent copies of a serving database, and putting one back (`dialtone backup|restore`).

A backup is a folder, owner-only, holding:

- the database: ``dialtone.db``, a copy made with SQLite's online backup API (one read
  transaction, so it is the database as of one instant while the server keeps writing), or
  ``dialtone.pgdump``, ``pg_dump``'s custom format (one snapshot, likewise);
- the data folder's secret files when the server reads them from there (the username pepper
  without which no account signs in again, and the admin token);
- ``files/``: the uploaded (encrypted) files, copied after the database, in their
  shard folders (``files/ab/cd/<id>``); unfinished uploads are left out;
- ``manifest.json``: what it holds, the schema revision, and a SHA-256 of every file.

Restoring checks the digests, refuses to overwrite a database that already holds a schema
(or secrets that differ) unless forced, and then migrates, so a backup from an older
version comes back at the current schema.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import make_url

from dialtone import __version__
from dialtone.config import ADMIN_TOKEN_FILE, PEPPER_FILE, Settings, restrict_folder
from dialtone.db.migrate import current_revision, restrict_sqlite_files, sqlite_path, upgrade
from dialtone.errors import ConfigError

MANIFEST = "manifest.json"
SQLITE_COPY = "dialtone.db"
PG_DUMP = "dialtone.pgdump"
FORMAT = 1
SECRET_FILES = (PEPPER_FILE, ADMIN_TOKEN_FILE)
FILES = "files"


@dataclass(frozen=True)
class Manifest:
    database: str  # "sqlite" or "postgresql"
    revision: str | None
    created_at: str
    files: dict[str, str]  # name → SHA-256 hex

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "dialtone_version": __version__,
                "database": self.database,
                "revision": self.revision,
                "created_at": self.created_at,
                "files": self.files,
            },
            indent=2,
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _kind(settings: Settings) -> str:
    return "sqlite" if settings.is_sqlite else "postgresql"


def _pg_env(db_url: str) -> dict[str, str]:
    """libpq's variables for the database: the password never appears on a command line."""
    url = make_url(db_url)
    env = dict(os.environ)
    for name, value in (
        ("PGHOST", url.host),
        ("PGPORT", str(url.port) if url.port else None),
        ("PGUSER", url.username),
        ("PGPASSWORD", url.password),
        ("PGDATABASE", url.database),
    ):
        if value:
            env[name] = value
    sslmode = url.query.get("ssl") or url.query.get("sslmode")
    if isinstance(sslmode, str):
        env["PGSSLMODE"] = sslmode
    return env


def _run_pg(tool: str, args: list[str], db_url: str) -> None:
    if shutil.which(tool) is None:
        raise ConfigError(
            f"{tool} is not installed: PostgreSQL backups need the PostgreSQL client tools "
            "(Debian: postgresql-client) of the server's major version or newer"
        )
    result = subprocess.run(  # noqa: S603  (fixed tool, arguments built here)
        [tool, *args], env=_pg_env(db_url), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[0]
        raise ConfigError(f"{tool} failed: {reason}")


def _sqlite_copy(source: Path, target: Path) -> None:
    """SQLite's online backup API, all pages in one step: a consistent copy even while
    another process writes (WAL readers do not block the writer)."""
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _sqlite_revision(path: Path) -> str | None:
    connection = sqlite3.connect(path)
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    return str(row[0]) if row else None


def backup(settings: Settings, folder: Path) -> Manifest:
    """Write a backup of the configured database (and data-folder secrets) into ``folder``,
    which must not exist yet or be empty."""
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} is not empty: give a new folder for the backup")
    restrict_folder(folder)
    files: list[str] = []
    if settings.is_sqlite:
        source = sqlite_path(settings.db_url)
        if source is None or not source.exists():
            raise ConfigError(f"there is no database to back up at {source}")
        _sqlite_copy(source, folder / SQLITE_COPY)
        revision = _sqlite_revision(folder / SQLITE_COPY)
        files.append(SQLITE_COPY)
    else:
        revision = current_revision(settings.db_url)
        # Custom format: compressed, restorable table by table; owners and grants are the
        # restoring server's business, not the backup's.
        _run_pg(
            "pg_dump",
            ["--format=custom", "--no-owner", "--no-privileges", f"--file={folder / PG_DUMP}"],
            settings.db_url,
        )
        files.append(PG_DUMP)
    data = Path(settings.data_dir)
    for name in SECRET_FILES:
        if (data / name).is_file():
            shutil.copyfile(data / name, folder / name)
            files.append(name)
    for name in files:
        os.chmod(folder / name, 0o600)
    # After the database: a file uploaded meanwhile is copied without its row (harmless,
    # the sweep has nothing to match it with); one deleted meanwhile is simply absent.
    files.extend(_copy_files(Path(settings.files_folder), folder / FILES))
    manifest = Manifest(
        database=_kind(settings),
        revision=revision,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        files={name: _sha256(folder / name) for name in files},
    )
    (folder / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def _stored_files(root: Path) -> list[Path]:
    """Every finished upload under ``root`` (its shard folders; not ``tmp/``)."""
    if not root.is_dir():
        return []
    return sorted(
        path
        for path in root.glob("*/*/*")
        if path.is_file() and path.relative_to(root).parts[0] != "tmp"
    )


def _copy_files(root: Path, target: Path) -> list[str]:
    names: list[str] = []
    for path in _stored_files(root):
        relative = path.relative_to(root)
        copy = target / relative
        copy.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            shutil.copyfile(path, copy)
        except FileNotFoundError:
            continue  # deleted since the listing
        os.chmod(copy, 0o600)
        names.append(f"{FILES}/{relative.as_posix()}")
    return names


def read_manifest(folder: Path) -> Manifest:
    try:
        raw = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{folder} is not a Dialtone backup ({MANIFEST}: {exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ConfigError(f"{folder / MANIFEST} is not a backup format this version reads")
    files = raw.get("files")
    if not isinstance(files, dict):
        raise ConfigError(f"{folder / MANIFEST} lists no files")
    for name, digest in files.items():
        path = folder / str(name)
        if not path.is_file() or _sha256(path) != digest:
            raise ConfigError(f"{path} is missing or damaged (its SHA-256 differs)")
    return Manifest(
        database=str(raw.get("database")),
        revision=raw.get("revision"),
        created_at=str(raw.get("created_at")),
        files={str(k): str(v) for k, v in files.items()},
    )


def _database_in_use(settings: Settings) -> str | None:
    """The revision of a database that already holds Dialtone's schema, else None."""
    path = sqlite_path(settings.db_url)
    if path is not None and not path.exists():
        return None
    return current_revision(settings.db_url)


def restore(settings: Settings, folder: Path, *, force: bool) -> Manifest:
    """Put a backup back into the configured database and data folder, then migrate."""
    manifest = read_manifest(folder)
    if manifest.database != _kind(settings):
        raise ConfigError(
            f"the backup is of a {manifest.database} database but the server is configured "
            f"for {_kind(settings)}"
        )
    data = Path(settings.data_dir)
    differing = [
        name
        for name in SECRET_FILES
        if name in manifest.files
        and (data / name).is_file()
        and (data / name).read_bytes() != (folder / name).read_bytes()
    ]
    configured_pepper = settings.username_pepper
    if PEPPER_FILE in manifest.files and configured_pepper and PEPPER_FILE not in differing:
        backed_up = (folder / PEPPER_FILE).read_text(encoding="utf-8").strip().encode()
        if backed_up != configured_pepper:
            differing.append(PEPPER_FILE)
    existing = _database_in_use(settings)
    if not force and existing is not None:
        raise ConfigError(
            f"the configured database already holds Dialtone's schema (revision {existing}): "
            "restore overwrites it only with --force (stop every node first)"
        )
    if not force and differing:
        raise ConfigError(
            f"the data folder's {', '.join(differing)} differ from the backup's (a different "
            "username pepper orphans every account): restore replaces them only with --force"
        )
    restrict_folder(data)
    if manifest.database == "sqlite":
        target = sqlite_path(settings.db_url)
        if target is None:
            raise ConfigError("restoring SQLite needs a database file (DIALTONE_DB_URL)")
        target.parent.mkdir(parents=True, exist_ok=True)
        _sqlite_copy(folder / SQLITE_COPY, target)
    else:
        _run_pg(
            "pg_restore",
            [
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                f"--dbname={make_url(settings.db_url).database}",
                str(folder / PG_DUMP),
            ],
            settings.db_url,
        )
    for name in SECRET_FILES:
        if name in manifest.files:
            target_file = data / name
            target_file.unlink(missing_ok=True)
            shutil.copyfile(folder / name, target_file)
            os.chmod(target_file, 0o600)
    _restore_files(manifest, folder, Path(settings.files_folder))
    upgrade(settings.db_url)
    restrict_sqlite_files(settings.db_url)
    return manifest


def _restore_files(manifest: Manifest, folder: Path, root: Path) -> None:
    """Put the backup's files into the files folder: written to a temporary name and
    renamed, as uploads are; one already there under its id is the same file."""
    prefix = f"{FILES}/"
    for name in manifest.files:
        if not name.startswith(prefix):
            continue
        relative = Path(name[len(prefix) :])
        if ".." in relative.parts or relative.is_absolute() or len(relative.parts) != 3:
            raise ConfigError(f"{folder / MANIFEST} names a file outside the files folder")
        target = root / relative
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = target.with_name(target.name + ".restoring")
        shutil.copyfile(folder / name, temp)
        os.chmod(temp, 0o600)
        os.replace(temp, target)
