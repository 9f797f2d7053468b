"""The client's saved config file, its settings merge, and the ``seamless`` CLI around them."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seam import Identity, PublicKeys
from seamless_client.cli import app, mask_token
from seamless_client.config import (
    ClientFile,
    ClientSettings,
    build_client_settings,
    clear_client_file,
    config_dir,
    config_path,
    identity_path,
    load_client_file,
    make_client_file,
    save_client_file,
)
from seamless_relay.config import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def keys() -> PublicKeys:
    return Identity.generate().public


@pytest.fixture(scope="module")
def other_keys() -> PublicKeys:
    return Identity.generate().public


@pytest.fixture(autouse=True)
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty config home and no SEAMLESS_* variables."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    for name in list(os.environ):
        if name.startswith("SEAMLESS_"):
            monkeypatch.delenv(name)
    return home


@pytest.fixture
def saved(keys: PublicKeys) -> ClientFile:
    stored = make_client_file("relay.example.com:4443", keys.x25519_hex, keys.kem_hex, "file-token-123456")
    save_client_file(stored)
    return stored


@pytest.fixture
def fake_tunnel(monkeypatch: pytest.MonkeyPatch) -> list[ClientSettings]:
    """Stand in for the runtime: record the settings and exit with status 5."""
    seen: list[ClientSettings] = []
    module = types.ModuleType("seamless_client.tunnel")
    module.run = lambda settings: seen.append(settings) or 5  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "seamless_client.tunnel", module)
    monkeypatch.setattr("seamless_relay.logs.configure_logging", lambda level, fmt: None)
    return seen


def invoke(args: list[str], **kwargs: object):
    return CliRunner().invoke(app, args, **kwargs)  # type: ignore[arg-type]


# -- paths --------------------------------------------------------------------------------------


def test_paths_follow_xdg(xdg: Path) -> None:
    assert config_dir() == xdg / "seamless"
    assert config_path() == xdg / "seamless" / "config.toml"
    assert identity_path() == xdg / "seamless" / "identity.json"


@pytest.mark.parametrize("value", ["", "relative/dir"])
def test_paths_fall_back_to_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", value)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config_path() == tmp_path / ".config" / "seamless" / "config.toml"


# -- the file -----------------------------------------------------------------------------------


def test_save_writes_0600_in_0700_dir_and_loads_back(keys: PublicKeys) -> None:
    stored = make_client_file("[::1]:4443", keys.x25519_hex.upper(), keys.kem_hex, 'tok"en\\1')
    path = save_client_file(stored)
    assert path == config_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_client_file() == stored
    assert stored.x25519 == keys.x25519_hex  # normalised to lower case
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temp file left behind


def test_load_missing_file_is_none() -> None:
    assert load_client_file() is None


def test_clear(saved: ClientFile) -> None:
    assert clear_client_file() is True
    assert not config_path().exists()
    assert clear_client_file() is False


@pytest.mark.parametrize(
    ("text", "label", "needle"),
    [
        ("relay = ", None, "invalid TOML"),
        ('relay = "h:1"\nx25519 = "00"\nkem = "00"\ncolour = "blue"\n', None, "'colour'"),
        ('x25519 = "00"\nkem = "00"\n', "--relay", "missing"),
    ],
)
def test_load_rejects_bad_files(text: str, label: str | None, needle: str) -> None:
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_client_file()
    assert info.value.field_flag == (label or str(path))
    assert needle in str(info.value)


def test_load_rejects_a_bad_key_naming_its_flag(keys: PublicKeys) -> None:
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text(f'relay = "h:1"\nx25519 = "{keys.x25519_hex}"\nkem = "abcd"\n')
    with pytest.raises(ConfigError) as info:
        load_client_file()
    assert info.value.field_flag == "--kem"
    assert str(path) in str(info.value) and "seamless config init" in str(info.value)


@pytest.mark.parametrize(
    ("relay", "x25519", "kem", "token", "flag"),
    [
        ("nonsense", None, None, None, "--relay"),
        (":4443", None, None, None, "--relay"),
        ("h:0", None, None, None, "--relay"),
        ("h:1", "zz" * 32, None, None, "--x25519"),
        ("h:1", "ab", None, None, "--x25519"),
        ("h:1", None, "ab" * 10, None, "--kem"),
        ("h:1", None, None, "has space", "--token"),
        ("h:1", None, None, "", "--token"),
    ],
)
def test_make_client_file_names_the_flag(
    keys: PublicKeys, relay: str, x25519: str | None, kem: str | None, token: str | None, flag: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_client_file(relay, x25519 or keys.x25519_hex, kem or keys.kem_hex, token)
    assert info.value.field_flag == flag


# -- settings -----------------------------------------------------------------------------------


def test_settings_from_the_file(saved: ClientFile, keys: PublicKeys, xdg: Path) -> None:
    settings = build_client_settings("http", "3000", stored=saved)
    assert (settings.relay_host, settings.relay_port) == ("relay.example.com", 4443)
    assert settings.server_keys == keys
    assert settings.token == "file-token-123456"
    assert (settings.kind, settings.local_host, settings.local_port) == ("http", "127.0.0.1", 3000)
    assert (settings.cipher, settings.congestion, settings.quiet) == ("auto", "bbr", False)
    assert settings.identity_path == xdg / "seamless" / "identity.json"


def test_flags_override_the_file(saved: ClientFile, other_keys: PublicKeys) -> None:
    settings = build_client_settings(
        "tcp",
        22,
        stored=saved,
        relay="[2001:db8::1]:5000",
        x25519=other_keys.x25519_hex,
        kem=other_keys.kem_hex,
        token="flag-token",
        local_host="::1",
        remote_port="0",
        quiet=True,
        congestion="NewReno",
        cipher="aes256gcm",
    )
    assert (settings.relay_host, settings.relay_port) == ("2001:db8::1", 5000)
    assert settings.server_keys == other_keys
    assert settings.token == "flag-token"
    assert (settings.local_host, settings.remote_port, settings.quiet) == ("::1", 0, True)
    assert (settings.congestion, settings.cipher) == ("newreno", "aes256gcm")


def test_flags_alone_need_no_file(keys: PublicKeys) -> None:
    settings = build_client_settings(
        "udp", 53, stored=None, relay="r:1", x25519=keys.x25519_hex, kem=keys.kem_hex, remote_port=5353
    )
    assert (settings.kind, settings.remote_port, settings.token) == ("udp", 5353, None)


@pytest.mark.parametrize(
    ("given", "flag"), [((), "--relay"), (("relay",), "--x25519"), (("relay", "x25519"), "--kem")]
)
def test_missing_relay_details_suggest_config_init(
    keys: PublicKeys, given: tuple[str, ...], flag: str
) -> None:
    values = {"relay": "r:1", "x25519": keys.x25519_hex}
    with pytest.raises(ConfigError) as info:
        build_client_settings("http", 80, stored=None, **{name: values[name] for name in given})
    assert info.value.field_flag == flag
    assert "seamless config init" in str(info.value)


@pytest.mark.parametrize(
    ("kind", "kwargs", "flag"),
    [
        ("http", {"local_port": "0"}, "PORT"),
        ("http", {"local_port": "http"}, "PORT"),
        ("http", {"local_port": 65536}, "PORT"),
        ("http", {"subdomain": "no_underscores"}, "--subdomain"),
        ("http", {"remote_port": 80}, "--remote-port"),
        ("tcp", {}, "--remote-port"),
        ("tcp", {"remote_port": "-1"}, "--remote-port"),
        ("udp", {"remote_port": 70000}, "--remote-port"),
        ("tcp", {"remote_port": 1, "subdomain": "x"}, "--subdomain"),
        ("http", {"local_host": "not a host"}, "--local-host"),
        ("http", {"congestion": "vegas"}, "--congestion"),
        ("http", {"cipher": "rot13"}, "--cipher"),
        ("http", {"token": "x" * 513}, "--token"),
        ("http", {"relay": "h:0"}, "--relay"),
        ("http", {"relay": "no-port"}, "--relay"),
    ],
)
def test_bad_settings_name_the_flag(
    saved: ClientFile, kind: str, kwargs: dict[str, object], flag: str
) -> None:
    kwargs = {"local_port": 8000, **kwargs}
    local_port = kwargs.pop("local_port")
    with pytest.raises(ConfigError) as info:
        build_client_settings(kind, local_port, stored=saved, **kwargs)  # type: ignore[arg-type]
    assert info.value.field_flag == flag, str(info.value)


def test_subdomain_is_lowercased(saved: ClientFile) -> None:
    assert build_client_settings("http", 80, stored=saved, subdomain="MyApp").subdomain == "myapp"


def test_settings_construct_directly_with_defaults(keys: PublicKeys, tmp_path: Path) -> None:
    settings = ClientSettings(
        relay_host="127.0.0.1",
        relay_port=4443,
        x25519_hex=keys.x25519_hex,
        kem_hex=keys.kem_hex,
        kind="http",
        local_port=8000,
        identity_path=tmp_path / "id.json",
    )
    assert settings.remote_port is None and settings.token is None and settings.subdomain is None
    with pytest.raises(ValueError):
        settings.local_port = 1  # type: ignore[misc]


# -- the CLI ------------------------------------------------------------------------------------


def test_config_init_writes_private_file(keys: PublicKeys) -> None:
    result = invoke(
        [
            "config",
            "init",
            "--relay",
            "relay.example.com:4443",
            "--x25519",
            keys.x25519_hex,
            "--kem",
            keys.kem_hex,
        ]
    )
    assert result.exit_code == 0, result.output
    assert str(config_path()) in result.stdout
    assert stat.S_IMODE(config_path().stat().st_mode) == 0o600
    stored = load_client_file()
    assert stored is not None and stored.relay == "relay.example.com:4443" and stored.token is None


def test_config_init_accepts_global_options(keys: PublicKeys) -> None:
    args = [
        "--relay",
        "r:1",
        "--x25519",
        keys.x25519_hex,
        "--kem",
        keys.kem_hex,
        "--token",
        "t0",
        "config",
        "init",
    ]
    assert invoke(args).exit_code == 0
    stored = load_client_file()
    assert stored is not None and stored.token == "t0"


@pytest.mark.parametrize(("drop", "flag"), [("--relay", "--relay"), ("--kem", "--kem")])
def test_config_init_missing_value(keys: PublicKeys, drop: str, flag: str) -> None:
    values = {"--relay": "r:1", "--x25519": keys.x25519_hex, "--kem": keys.kem_hex}
    del values[drop]
    result = invoke(["config", "init", *[part for item in values.items() for part in item]])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {flag}: ")


def test_config_init_validates_before_writing(keys: PublicKeys) -> None:
    result = invoke(["config", "init", "--relay", "r:1", "--x25519", "00" * 31, "--kem", keys.kem_hex])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: --x25519: x25519 key must be 64 hex characters, got 62")
    assert not config_path().exists()


def test_config_show_masks_token_and_shortens_keys(saved: ClientFile, keys: PublicKeys) -> None:
    result = invoke(["config", "show"])
    assert result.exit_code == 0
    assert "relay.example.com:4443" in result.stdout
    assert "file…(17 chars)" in result.stdout
    assert "file-token-123456" not in result.stdout
    assert keys.kem_hex not in result.stdout and keys.x25519_hex not in result.stdout
    assert keys.x25519_hex[:8] in result.stdout


def test_mask_token() -> None:
    assert mask_token("abcdefghijkl") == "abcd…(12 chars)"
    assert mask_token("short") == "****"


def test_config_show_reports_a_broken_file() -> None:
    config_path().parent.mkdir(parents=True)
    config_path().write_text("relay = [")
    result = invoke(["config", "show"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {config_path()}: invalid TOML")


def test_config_clear(saved: ClientFile) -> None:
    result = invoke(["config", "clear"])
    assert result.exit_code == 0 and "removed" in result.stdout
    assert not config_path().exists()
    assert "no config" in invoke(["config", "clear"]).stdout
    assert invoke(["config", "show"]).exit_code == 1


def test_tunnel_commands_use_the_file(saved: ClientFile, fake_tunnel: list[ClientSettings]) -> None:
    result = invoke(["http", "3000", "--subdomain", "myapp"])
    assert result.exit_code == 5, result.output
    (settings,) = fake_tunnel
    assert (settings.kind, settings.local_port, settings.subdomain) == ("http", 3000, "myapp")
    assert settings.relay_host == "relay.example.com" and settings.token == "file-token-123456"


def test_tunnel_flags_and_env_override_the_file(
    saved: ClientFile, other_keys: PublicKeys, fake_tunnel: list[ClientSettings]
) -> None:
    args = ["--relay", "other:9", "--x25519", other_keys.x25519_hex, "--kem", other_keys.kem_hex, "-q"]
    result = invoke(
        [*args, "--local-host", "10.0.0.2", "tcp", "22", "--remote-port", "2222"],
        env={"SEAMLESS_TOKEN": "env-tok"},
    )
    assert result.exit_code == 5, result.output
    (settings,) = fake_tunnel
    assert (settings.relay_host, settings.relay_port, settings.server_keys) == ("other", 9, other_keys)
    assert (settings.token, settings.quiet, settings.local_host) == ("env-tok", True, "10.0.0.2")
    assert (settings.kind, settings.remote_port) == ("tcp", 2222)
    assert (
        invoke(
            ["--token", "flag-tok", "udp", "53", "--remote-port", "0"], env={"SEAMLESS_TOKEN": "env-tok"}
        ).exit_code
        == 5
    )
    assert fake_tunnel[1].token == "flag-tok" and fake_tunnel[1].remote_port == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["http", "3000"], "Error: --relay: not given"),
        (["--relay", "r:1", "http", "3000"], "Error: --x25519: not given"),
    ],
)
def test_tunnel_without_relay_details(
    fake_tunnel: list[ClientSettings], args: list[str], message: str
) -> None:
    result = invoke(args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and "seamless config init" in result.stderr
    assert fake_tunnel == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tcp", "22"], "Error: --remote-port: required for tcp tunnels"),
        (["http", "99999"], "Error: PORT: must be between 1 and 65535 (got 99999)"),
        (["--cipher", "rot13", "http", "80"], "Error: --cipher: "),
        (["--relay", "nonsense", "http", "80"], "Error: --relay: expected HOST:PORT"),
        (["udp", "53", "--remote-port", "x"], "Error: --remote-port: must be a whole number"),
    ],
)
def test_tunnel_bad_flag_exits_2(
    saved: ClientFile, fake_tunnel: list[ClientSettings], args: list[str], message: str
) -> None:
    result = invoke(args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert fake_tunnel == []


def test_version_and_help_still_work() -> None:
    assert invoke(["version"]).stdout.startswith("seamless ")
    help_text = invoke(["--help"]).stdout
    for command in ("http", "tcp", "udp", "config", "demo", "version", "transport-demo"):
        assert command in help_text


def test_seamless_config_show_without_config(tmp_path: Path) -> None:
    script = shutil.which("seamless", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-c", "from seamless_client.cli import main; main()"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEAMLESS_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "empty"), PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [*command, "config", "show"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert proc.returncode == 1
    assert "no config at " + str(tmp_path / "empty" / "seamless" / "config.toml") in proc.stderr
    assert not (tmp_path / "empty").exists()  # showing creates nothing
