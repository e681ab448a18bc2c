"""App spec validation: compose names, atoll's own fields, located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from atoll.apps.spec import (
    ENV_NOT_SECRET,
    AppSpec,
    BackupMethod,
    Role,
    builtin_names,
    load_app_spec,
    load_builtin,
    parse_duration,
    parse_memory,
    secret_env_word,
    validate_app_name,
)
from atoll.core.errors import InputError, SpecError
from atoll.core.spec import load_spec_text

GOOD = """\
image: atoll/mariadb:bookworm
role: database
user: "999:999"
environment:
  TZ: UTC
ports: ["127.0.0.1:13306:3306", "3307:3306/tcp"]
volumes:
  - data:/var/lib/mysql
  - conf:/etc/mysql/conf.d:ro
secrets: [root-password, monitor-password]
cap_add: [CHOWN]
healthcheck:
  test: ["CMD", "true"]
  interval: 5s
backup: {method: mariadb-backup, retention: 3, max_age: 7d}
resources: {memory: 512m, cpus: 0.5}
"""


def load(text: str) -> AppSpec:
    return load_spec_text(text, AppSpec, "app.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load(text)
    return exc.value.problems


def test_good_spec_parses_into_typed_views() -> None:
    s = load(GOOD)
    assert s.role is Role.database and s.environment == {"TZ": "UTC"}
    ports = s.port_mappings()
    assert (ports[0].host_ip, ports[0].host_port, ports[0].container_port) == (
        "127.0.0.1",
        13306,
        3306,
    )
    assert ports[1].host_ip == "127.0.0.1"  # published on loopback unless the spec says otherwise
    vols = s.volume_mounts()
    assert [(v.name, v.target, v.read_only) for v in vols] == [
        ("data", "/var/lib/mysql", False),
        ("conf", "/etc/mysql/conf.d", True),
    ]
    assert s.backup_policy().method is BackupMethod.mariadb_backup
    assert s.cap_add == ["CHOWN"]


def test_builtin_specs_are_valid() -> None:
    assert {"mariadb", "percona"} <= set(builtin_names())
    for name in builtin_names():
        spec, text = load_builtin(name)
        assert spec.role is Role.database and text
    with pytest.raises(InputError):
        load_builtin("nope")


@pytest.mark.parametrize(
    ("old", "new", "where", "words"),
    [
        (
            "  - data:/var/lib/mysql",
            "  - /srv/db:/var/lib/mysql",
            "app.yaml:8: volumes.0",
            "host paths",
        ),
        ("  - conf:/etc/mysql/conf.d:ro", "  - conf:relative", "app.yaml:9: volumes.1", "absolute"),
        ('"3307:3306/tcp"', '"99999:3306"', "app.yaml:6: ports.1", "out of range"),
        ('"3307:3306/tcp"', '"3306"', "app.yaml:6: ports.1", "host port"),
        (
            "  TZ: UTC",
            "  MYSQL_ROOT_PASSWORD: hunter2",
            "app.yaml:5: environment.MYSQL_ROOT_PASSWORD",
            "never go in the environment",
        ),
        ("cap_add: [CHOWN]", "cap_add: [SYS_ADMIN]", "app.yaml:11: cap_add", "confinement"),
        ("memory: 512m", "memory: 10m", "app.yaml:16: resources.memory", "below 64m"),
        ("cpus: 0.5", "cpus: 0", "app.yaml:16: resources.cpus", "greater than 0"),
        ("method: mariadb-backup", "method: tape", "app.yaml:15: backup.method", "mysqldump"),
        ("max_age: 7d", "max_age: soon", "app.yaml:15: backup.max_age", "duration"),
        ('test: ["CMD", "true"]', "test: true", "app.yaml:13: healthcheck.test", "list"),
        (
            'test: ["CMD", "true"]',
            'test: ["CMD-SHELL", "true"]',
            "app.yaml:13: healthcheck.test",
            "exec form",
        ),
        ('user: "999:999"', "user: mysql", "app.yaml:3: user", "numeric"),
        (
            "secrets: [root-password, monitor-password]",
            "secrets: [root-password]",
            "app.yaml:1: (top level)",
            "monitor-password",
        ),
        ("image: atoll/mariadb:bookworm", "imagen: x", "app.yaml:1: imagen", "unknown field"),
    ],
)
def test_bad_fields_are_located(old: str, new: str, where: str, words: str) -> None:
    assert old in GOOD
    found = problems(GOOD.replace(old, new))
    assert any(p.startswith(where + ":") and words in p for p in found), found


def test_secret_env_allowed_as_file_pointer() -> None:
    s = load(GOOD.replace("  TZ: UTC", "  MYSQL_ROOT_PASSWORD_FILE: /run/secrets/root-password"))
    assert "MYSQL_ROOT_PASSWORD_FILE" in s.environment


def test_environment_list_form_and_duplicate_targets() -> None:
    s = load(GOOD.replace("environment:\n  TZ: UTC", "environment: [TZ=UTC, A=b=c]"))
    assert s.environment == {"TZ": "UTC", "A": "b=c"}
    found = problems(GOOD.replace("conf:/etc/mysql/conf.d:ro", "conf:/var/lib/mysql"))
    assert any("mounted twice" in p for p in found)
    found = problems(GOOD.replace("conf:/etc/mysql/conf.d:ro", "conf:/run/secrets"))
    assert any("reserved" in p for p in found)


def test_empty_and_syntax_errors(tmp_path: Path) -> None:
    assert problems("") == ["app.yaml:1: (top level): the file is empty"]
    assert problems("image: [unclosed\n")[0].startswith("app.yaml:")
    with pytest.raises(InputError):
        load_app_spec(tmp_path / "missing.yaml")


def test_units() -> None:
    assert (
        parse_duration("90s") == 90
        and parse_duration("2m") == 120
        and parse_duration("7d") == 604800
    )
    assert parse_duration(5) == 5.0
    with pytest.raises(ValueError):
        parse_duration("1 week")
    assert parse_memory("512m") == 512 * 1024**2 and parse_memory("1.5G") == int(1.5 * 1024**3)
    assert parse_memory(4096) == 4096
    with pytest.raises(ValueError):
        parse_memory("lots")


@pytest.mark.parametrize("name", ["db", "percona", "shop-db-2"])
def test_app_names_ok(name: str) -> None:
    assert validate_app_name(name) == name


@pytest.mark.parametrize("name", ["", "a", "Db", "-db", "db-", "../x", "a" * 40, "db_1"])
def test_app_names_bad(name: str) -> None:
    with pytest.raises(InputError):
        validate_app_name(name)


def test_examples_are_valid() -> None:
    examples = sorted((Path(__file__).resolve().parents[2] / "examples/apps").glob("*.yaml"))
    assert examples
    for path in examples:
        spec, _ = load_app_spec(path)
        assert spec.image


# Names that hold a secret: refused wherever they are, located at their own line.
SECRET_NAMES = [
    "MYSQL_ROOT_PASSWORD", "MYSQL_PASSWORD", "MARIADB_ROOT_PASSWORD", "MARIADB_PASSWORD",
    "MARIADB_ROOT_PASSWORD_HASH", "POSTGRES_PASSWORD", "MYSQL_PWD", "PGPASSWORD", "DB_PASS",
    "DB_PASSWD", "SMTP_PASSWD", "REDIS_PW", "API_KEY", "APIKEY", "STRIPE_APIKEY", "AWS_ACCESS_KEY",
    "AWS_SECRET_ACCESS_KEY", "PRIVATE_KEY", "SSH_PRIVATE_KEY", "TLS_KEY", "JWT_SECRET",
    "JWTSECRET", "CLIENT_SECRETS", "GITHUB_TOKEN", "GHTOKEN", "VAULT_TOKEN", "ACCESS_TOKENS",
    "GOOGLE_APPLICATION_CREDENTIALS", "DB_CREDENTIAL", "REGISTRY_CREDS", "BASIC_AUTH",
    "AUTH_SALT", "WIFI_PSK", "KEYS", "backup_passphrase", "Db_Password", "secret", "key",
    # a secret word at the end of one part: DBPASS, MYSQLPWD, SECRETKEY...
    "DBPASS", "REDISPASS", "MYSQLPWD", "SECRETKEY", "CERTKEY", "dbPass",
]

# Flags and settings that contain a secret word but are no secret.
HARMLESS_NAMES = [
    "MYSQL_ALLOW_EMPTY_PASSWORD", "MYSQL_RANDOM_ROOT_PASSWORD", "MYSQL_ONETIME_PASSWORD",
    "MARIADB_ALLOW_EMPTY_ROOT_PASSWORD", "MARIADB_RANDOM_ROOT_PASSWORD", "ALLOW_EMPTY_PASSWORD",
    "POSTGRES_HOST_AUTH_METHOD", "mysql_allow_empty_password",
    # settings whose secret word is inside a longer part
    "MYSQL_AUTHENTICATION_PLUGIN", "DEFAULT_AUTHENTICATION_PLUGIN",
    # a pointer to a secret file
    "MYSQL_ROOT_PASSWORD_FILE", "MYSQL_PWD_FILE", "API_KEY_FILE", "GITHUB_TOKEN_FILE",
    # a secret word inside another word is not a part of its own
    "KEYBOARD_LAYOUT", "MONKEY_COUNT", "PASSIVE_MODE", "COMPASS", "AUTHOR", "AUTHORITY_URL",
    "PRIVATEER", "TOKENIZER_PATH", "SECRETARY_EMAIL", "LANG", "MARIADB_AUTO_UPGRADE",
    # KEY and PRIVATE name a secret only as the last part; English words ending in PASS
    "KEY_BUFFER_SIZE", "PRIVATE_NETWORK", "BYPASS", "BYPASS_PROXY", "HOTKEY",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names_in_environment_are_refused(name: str) -> None:
    assert secret_env_word(name) is not None
    found = problems(GOOD.replace("  TZ: UTC", f"  TZ: UTC\n  {name}: hunter2"))
    assert len(found) == 1, found
    assert found[0].startswith(f"app.yaml:6: environment.{name}: ")
    assert "never go in the environment" in found[0] and "/run/secrets/" in found[0]
    # the list form (compose's ["KEY=value"]) too
    found = problems(GOOD.replace("environment:\n  TZ: UTC", f"environment: [TZ=UTC, {name}=x]"))
    assert len(found) == 1 and found[0].startswith(f"app.yaml:4: environment.{name}: "), found


@pytest.mark.parametrize("name", HARMLESS_NAMES)
def test_harmless_names_in_environment_are_accepted(name: str) -> None:
    assert secret_env_word(name) is None
    spec = load(GOOD.replace("  TZ: UTC", f"  TZ: UTC\n  {name}: 'yes'"))
    assert spec.environment[name] == "yes"


def test_every_allowed_flag_is_tested_and_documented() -> None:
    assert set(HARMLESS_NAMES) >= ENV_NOT_SECRET
    doc = (Path(__file__).resolve().parents[2] / "docs/apps.md").read_text()
    for name in ENV_NOT_SECRET:
        assert f"`{name}`" in doc, name


def test_every_secret_in_environment_is_reported_in_line_order() -> None:
    env = "environment:\n  API_KEY: a\n  TZ: UTC\n  DB_PASS: b\n  MYSQL_PWD: c\n"
    found = problems(GOOD.replace("environment:\n  TZ: UTC\n", env))
    assert [p.split(": ")[0] + ": " + p.split(": ")[1] for p in found] == [
        "app.yaml:5: environment.API_KEY",
        "app.yaml:7: environment.DB_PASS",
        "app.yaml:8: environment.MYSQL_PWD",
    ]
