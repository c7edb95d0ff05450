"""load_settings: defaults, the reference's URL forms, and one clear line per bad setting."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dialtone.config import DEFAULTS, Settings, ensure_secrets, load_settings, normalise_db_url
from dialtone.errors import ConfigError


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings({"DIALTONE_DATA_DIR": str(tmp_path)})
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.db_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'dialtone.db'}"
    assert settings.session_ttl == settings.invite_ttl == 24 * 3600
    assert settings.tls_cert is None
    assert settings.tls_key is None
    assert settings.username_pepper == b""  # nothing created until serve runs
    assert settings.max_open_connections_per_address == 256


def test_open_connection_cap_is_read(tmp_path: Path) -> None:
    settings = load_settings(
        {"DIALTONE_DATA_DIR": str(tmp_path), "DIALTONE_MAX_OPEN_CONNECTIONS_PER_ADDRESS": "40"}
    )
    assert settings.max_open_connections_per_address == 40


def test_reads_everything(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    key = tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("y")
    settings = load_settings(
        {
            "DIALTONE_LISTEN_ADDR": ":9000",
            "DIALTONE_DATA_DIR": str(tmp_path),
            "DIALTONE_DB_URL": "sqlite:///" + str(tmp_path / "x.db"),
            "DIALTONE_USERNAME_PEPPER": "p" * 32,
            "DIALTONE_ADMIN_TOKEN": "t" * 32,
            "DIALTONE_TLS_CERT": str(cert),
            "DIALTONE_TLS_KEY": str(key),
            "DIALTONE_SESSION_TTL": "90m",
            "DIALTONE_INVITE_TTL": "2d",
        }
    )
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)
    assert settings.db_url == "sqlite+aiosqlite:///" + str(tmp_path / "x.db")
    assert settings.username_pepper == b"p" * 32
    assert settings.admin_token == "t" * 32
    assert settings.tls_cert == str(cert)
    assert settings.session_ttl == 90 * 60
    assert settings.invite_ttl == 2 * 24 * 3600


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgres://user@host/db?sslmode=disable", "postgresql+asyncpg://user@host/db"),
        (
            "postgres://u:p@host:5433/db?sslmode=require",
            "postgresql+asyncpg://u:p@host:5433/db?ssl=require",
        ),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:////abs/path.db", "sqlite+aiosqlite:////abs/path.db"),
        ("sqlite+aiosqlite:///rel.db", "sqlite+aiosqlite:///rel.db"),
    ],
)
def test_db_url_forms(raw: str, expected: str) -> None:
    assert normalise_db_url(raw) == expected
    assert load_settings({"DIALTONE_DB_URL": raw}).db_url == expected


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"DIALTONE_LISTEN_ADDR": "nonsense"}, "DIALTONE_LISTEN_ADDR"),
        ({"DIALTONE_LISTEN_ADDR": "host:99999"}, "DIALTONE_LISTEN_ADDR"),
        ({"DIALTONE_DB_URL": "mysql://u@h/db"}, "DIALTONE_DB_URL"),
        ({"DIALTONE_DB_URL": "postgres://[broken/db"}, "DIALTONE_DB_URL"),
        ({"DIALTONE_DB_URL": "postgres://u@h:port/db"}, "DIALTONE_DB_URL"),
        ({"DIALTONE_USERNAME_PEPPER": "short"}, "DIALTONE_USERNAME_PEPPER"),
        ({"DIALTONE_ADMIN_TOKEN": "short"}, "DIALTONE_ADMIN_TOKEN"),
        ({"DIALTONE_TLS_CERT": "/etc/hostname"}, "DIALTONE_TLS_KEY"),
        ({"DIALTONE_TLS_CERT": "/nope", "DIALTONE_TLS_KEY": "/nope"}, "DIALTONE_TLS_CERT"),
        ({"DIALTONE_SESSION_TTL": "soon"}, "DIALTONE_SESSION_TTL"),
        ({"DIALTONE_SESSION_TTL": "h"}, "DIALTONE_SESSION_TTL"),
        ({"DIALTONE_INVITE_TTL": "-5"}, "DIALTONE_INVITE_TTL"),
        ({"DIALTONE_INVITE_TTL": "0"}, "DIALTONE_INVITE_TTL"),
        ({"DIALTONE_LOG_FORMAT": "xml"}, "DIALTONE_LOG_FORMAT"),
        ({"DIALTONE_RATE_LIMITS": "maybe"}, "DIALTONE_RATE_LIMITS"),
        ({"DIALTONE_ARGON2_MEMORY_KIB": "1024"}, "DIALTONE_ARGON2_MEMORY_KIB"),
        ({"DIALTONE_ARGON2_TIME_COST": "x"}, "DIALTONE_ARGON2_TIME_COST"),
        ({"DIALTONE_REDIS_URL": "http://x"}, "DIALTONE_REDIS_URL"),
        ({"DIALTONE_REDIS_URL": "redis://127.0.0.1/0"}, "DIALTONE_CLUSTER_SECRET"),
        ({"DIALTONE_CLUSTER_SECRET": "too-short"}, "DIALTONE_CLUSTER_SECRET"),
        ({"DIALTONE_LOGIN_USER_BURST": "0"}, "DIALTONE_LOGIN_USER_BURST"),
        ({"DIALTONE_ADMIN_TOKEN_REFILL": "-1"}, "DIALTONE_ADMIN_TOKEN_REFILL"),
        (
            {"DIALTONE_MAX_OPEN_CONNECTIONS_PER_ADDRESS": "0"},
            "DIALTONE_MAX_OPEN_CONNECTIONS_PER_ADDRESS",
        ),
    ],
)
def test_bad_settings_give_one_line(env: dict[str, str], mentions: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert mentions in message
    assert "\n" not in message


def test_first_run_secrets_are_private_and_reused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created, token_path = ensure_secrets(str(data))
    assert created
    for name in ("username_pepper", "admin_token"):
        mode = stat.S_IMODE((data / name).stat().st_mode)
        assert mode == 0o600, oct(mode)
    first = load_settings({"DIALTONE_DATA_DIR": str(data)})
    assert first.admin_token == token_path.read_text().strip()
    assert len(first.username_pepper) >= 32

    created_again, _ = ensure_secrets(str(data))
    assert not created_again
    second = load_settings({"DIALTONE_DATA_DIR": str(data)})
    assert second.admin_token == first.admin_token
    assert second.username_pepper == first.username_pepper


def test_environment_wins_over_files(tmp_path: Path) -> None:
    ensure_secrets(str(tmp_path))
    settings = load_settings(
        {"DIALTONE_DATA_DIR": str(tmp_path), "DIALTONE_ADMIN_TOKEN": "from-the-environment"}
    )
    assert settings.admin_token == "from-the-environment"


def test_unset_variables_take_the_settings_defaults(tmp_path: Path) -> None:
    """Defaults live on the Settings struct only; load_settings falls back to them."""
    loaded = load_settings({"DIALTONE_DATA_DIR": str(tmp_path)})
    derived = {"data_dir", "db_url", "username_pepper", "admin_token"}
    for name in Settings.__struct_fields__:
        if name not in derived:
            assert getattr(loaded, name) == getattr(DEFAULTS, name), name
