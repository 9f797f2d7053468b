"""The relay's configuration layer: parsing, precedence, error messages, and the CLI around it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seamless_relay.cli import app
from seamless_relay.config import (
    ConfigError,
    HostPort,
    Passthrough,
    RelayConfig,
    build_relay_config,
    load_tokens,
)
from seamless_relay.logs import JsonFormatter, TextFormatter

REPO = Path(__file__).resolve().parent.parent


def build(cli: dict[str, object] | None = None, env: dict[str, str] | None = None, path: Path | None = None):
    return build_relay_config(cli or {}, env or {}, path)


def error_of(
    cli: dict[str, object] | None = None, env: dict[str, str] | None = None, path: Path | None = None
):
    with pytest.raises(ConfigError) as info:
        build(cli, env, path)
    return str(info.value)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def pem_pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two readable files; the config layer only checks that they exist, the runtime parses them."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert\n")
    key.write_text("key\n")
    return cert, key


# -- HostPort and Passthrough -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("1.2.3.4:80", "1.2.3.4", 80),
        ("relay.example.com:4443", "relay.example.com", 4443),
        ("[::1]:443", "::1", 443),
        ("[2001:db8::5]:0", "2001:db8::5", 0),
        (":8080", "0.0.0.0", 8080),
        (" localhost:65535 ", "localhost", 65535),
    ],
)
def test_host_port_parses(text: str, host: str, port: int) -> None:
    parsed = HostPort.parse(text)
    assert (parsed.host, parsed.port) == (host, port)
    assert HostPort.parse(str(parsed)) == parsed


def test_host_port_str_brackets_ipv6() -> None:
    assert str(HostPort(host="::1", port=22)) == "[::1]:22"
    assert str(HostPort(host="10.0.0.1", port=22)) == "10.0.0.1:22"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("nonsense", "expected HOST:PORT"),
        ("::1:80", "needs brackets"),
        ("host:", "port must be a number"),
        ("host:http", "port must be a number"),
        ("host:70000", "between 0 and 65535"),
        ("[1.2.3.4]:80", "not an IPv6 address"),
        ("[::1]80", "expected HOST:PORT"),
        ("bad host:80", "not a valid hostname"),
    ],
)
def test_host_port_rejects(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        HostPort.parse(text)


def test_host_port_can_require_a_host() -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        HostPort.parse(":4443", default_host=None)


@pytest.mark.parametrize(
    ("text", "listen", "host", "port"),
    [
        ("2222:10.0.0.5:22", 2222, "10.0.0.5", 22),
        ("2222:[::1]:22", 2222, "::1", 22),
        ("5432:db.internal:5432", 5432, "db.internal", 5432),
        ("0:[2001:db8::1]:8443", 0, "2001:db8::1", 8443),
    ],
)
def test_passthrough_parses(text: str, listen: int, host: str, port: int) -> None:
    rule = Passthrough.model_validate(text)
    assert (rule.listen_port, rule.backend.host, rule.backend.port) == (listen, host, port)
    assert Passthrough.model_validate(str(rule)) == rule


@pytest.mark.parametrize(
    "text", ["x", "22", "22:h", "22::22", "22:h:0", "22:[::1]", "70000:h:22", "22:::1:22"]
)
def test_passthrough_rejects(text: str) -> None:
    message = error_of({"tcp_passthrough": [text]})
    assert message.startswith("--tcp-passthrough: ")


# -- token file ---------------------------------------------------------------------------------


def test_load_tokens_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# team tokens\n\n  alpha  \nbeta # laptop\n\t\ngamma\nalpha\n")
    assert load_tokens(path) == frozenset({"alpha", "beta", "gamma"})


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   # another\n"])
def test_load_tokens_needs_a_token(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(ValueError, match="no tokens"):
        load_tokens(path)


def test_load_tokens_rejects_inner_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("good\ntwo words\n")
    with pytest.raises(ValueError, match=":2: "):
        load_tokens(path)


def test_auth_file_is_checked_at_config_time(tmp_path: Path) -> None:
    assert error_of({"auth_file": str(tmp_path / "missing")}).startswith("--auth-file: ")
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n")
    assert "no tokens" in error_of({"auth_file": str(empty)})
    good = tmp_path / "tokens"
    good.write_text("t1\n")
    assert build({"auth_file": str(good)}).auth_file == good


# -- defaults and precedence --------------------------------------------------------------------


def test_defaults() -> None:
    config = build()
    assert config == RelayConfig()
    assert str(config.seam_addr) == "0.0.0.0:4443"
    assert str(config.http_addr) == "0.0.0.0:8080"
    assert config.https_addr is None
    assert config.reserved_subdomains == ["www", "admin", "api", "relay"]
    assert (config.subdomain_length, config.subdomain_grace, config.tunnel_keepalive) == (8, 300.0, 30.0)
    assert (config.cipher, config.congestion, config.log_level, config.log_format) == (
        "auto",
        "bbr",
        "info",
        "text",
    )
    assert config.max_body_size == 10485760
    assert config.store == Path("seamless-relay.json")


@pytest.mark.parametrize(
    ("field", "flag_value", "env_value", "file_line", "expected_flag", "expected_env", "expected_file"),
    [
        ("subdomain_length", "12", "10", "subdomain_length = 6", 12, 10, 6),
        ("tunnel_keepalive", "5", "7.5", "tunnel-keepalive = 9.0", 5.0, 7.5, 9.0),
        ("seam_addr", ":1", "127.0.0.1:2", 'seam_addr = "[::1]:3"', ":1", "127.0.0.1:2", "[::1]:3"),
        ("allow_custom_domains", True, "false", "allow-custom-domains = true", True, False, True),
        (
            "reserved_subdomains",
            "a,b",
            "c",
            'reserved_subdomains = ["d", "e"]',
            ["a", "b"],
            ["c"],
            ["d", "e"],
        ),
        (
            "tcp_passthrough",
            ["1000:h:1", "1001:h:2"],
            "2000:[::1]:1,2001:h:2",
            'tcp_passthrough = ["3000:h:3"]',
            ["1000:h:1", "1001:h:2"],
            ["2000:[::1]:1", "2001:h:2"],
            ["3000:h:3"],
        ),
        (
            "cipher",
            "aes256gcm",
            "chacha20poly1305",
            'cipher = "aes256gcm"',
            "aes256gcm",
            "chacha20poly1305",
            "aes256gcm",
        ),
    ],
)
def test_flag_beats_env_beats_file_beats_default(
    tmp_path: Path,
    field: str,
    flag_value: object,
    env_value: str,
    file_line: str,
    expected_flag: object,
    expected_env: object,
    expected_file: object,
) -> None:
    def shown(config: RelayConfig) -> object:
        value = getattr(config, field)
        if isinstance(value, HostPort):
            return str(value)
        if field == "tcp_passthrough":
            return [str(rule) for rule in value]
        return value

    def normal(value: object) -> object:
        return str(HostPort.parse(value)) if field == "seam_addr" else value

    path = write_toml(tmp_path, file_line + "\n")
    env = {"SEAMLESS_" + field.upper(): env_value}
    assert shown(build({field: flag_value}, env, path)) == normal(expected_flag)
    assert shown(build({field: None}, env, path)) == normal(expected_env)
    assert shown(build({}, {}, path)) == normal(expected_file)
    assert shown(build()) == shown(RelayConfig())


def test_fields_merge_independently(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'base_domain = "file.example"\nsubdomain_length = 20\nlog_level = "debug"\n')
    config = build({"subdomain_length": 16}, {"SEAMLESS_LOG_LEVEL": "warning"}, path)
    assert (config.base_domain, config.subdomain_length, config.log_level) == ("file.example", 16, "warning")


def test_empty_repeatable_flag_counts_as_absent() -> None:
    config = build({"tcp_passthrough": ()}, {"SEAMLESS_TCP_PASSTHROUGH": "2222:h:22"})
    assert [str(rule) for rule in config.tcp_passthrough] == ["2222:h:22"]


def test_empty_env_list_clears_the_default() -> None:
    assert build(env={"SEAMLESS_RESERVED_SUBDOMAINS": ""}).reserved_subdomains == []


def test_unrelated_env_is_ignored() -> None:
    assert build(env={"SEAMLESS_TOKEN": "x", "SEAMLESS_NOT_A_FIELD": "y"}) == RelayConfig()


def test_config_path_from_env(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "subdomain-length = 5\n")
    assert build(env={"SEAMLESS_CONFIG": str(path)}).subdomain_length == 5
    other = tmp_path / "other.toml"
    other.write_text("subdomain-length = 6\n")
    assert build(env={"SEAMLESS_CONFIG": str(path)}, path=other).subdomain_length == 6


def test_file_accepts_flag_strings_and_both_key_spellings(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'seam-addr = ":5000"\nhttp_addr = "off"\nsubdomain-length = "9"\ntls_self_signed = "yes"\n'
        'https-addr = ":8443"\nreserved-subdomains = "x,y"\nlog-level = "DEBUG"\n',
    )
    config = build(path=path)
    assert config.seam_addr == HostPort(host="0.0.0.0", port=5000)
    assert config.http_addr is None
    assert config.subdomain_length == 9
    assert config.tls_self_signed is True
    assert config.reserved_subdomains == ["x", "y"]
    assert config.log_level == "debug"


def test_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "tokens").write_text("t\n")
    path = tmp_path / "conf" / "relay.toml"
    path.write_text('auth_file = "tokens"\nstore = "state/relay.json"\n')
    config = build(path=path)
    assert config.auth_file == tmp_path / "conf" / "tokens"
    assert config.store == tmp_path / "conf" / "state" / "relay.json"


def test_unknown_file_key_is_named(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "subdomain-lenght = 5\n")
    message = error_of(path=path)
    assert message.startswith("--config: ")
    assert str(path) in message
    assert "'subdomain-lenght'" in message
    assert "subdomain-length" in message  # the suggestion


def test_same_key_in_both_spellings_is_an_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "subdomain_length = 5\nsubdomain-length = 6\n")
    assert "given twice" in error_of(path=path)


@pytest.mark.parametrize(("text", "needle"), [("seam_addr = ", "invalid TOML"), (None, "no such file")])
def test_bad_or_missing_file(tmp_path: Path, text: str | None, needle: str) -> None:
    path = tmp_path / "relay.toml"
    if text is not None:
        path.write_text(text)
    message = error_of(path=path)
    assert message.startswith("--config: ")
    assert needle in message


def test_file_value_error_names_flag_file_and_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "subdomain-length = 2\n")
    message = error_of(path=path)
    assert message.startswith("--subdomain-length: must be between 4 and 32 (got 2)")
    assert str(path) in message
    assert "'subdomain-length'" in message


def test_env_value_error_names_flag_and_variable() -> None:
    message = error_of(env={"SEAMLESS_TUNNEL_KEEPALIVE": "601"})
    assert message.startswith("--tunnel-keepalive: ")
    assert "SEAMLESS_TUNNEL_KEEPALIVE" in message


def test_flag_error_message_is_exact() -> None:
    assert error_of({"subdomain_length": "2"}) == "--subdomain-length: must be between 4 and 32 (got 2)"


# -- validation, each error naming its flag -----------------------------------------------------


@pytest.mark.parametrize(
    ("cli", "flag"),
    [
        ({"seam_addr": "nonsense"}, "--seam-addr"),
        ({"http_addr": "1.2.3.4"}, "--http-addr"),
        ({"https_addr": ":8443"}, "--https-addr"),
        ({"base_domain": "not a domain"}, "--base-domain"),
        ({"base_domain": "10.0.0.1"}, "--base-domain"),
        ({"auth_file": "/definitely/missing"}, "--auth-file"),
        ({"allow_custom_domains": "perhaps"}, "--allow-custom-domains"),
        ({"reserved_subdomains": "ok,not_ok"}, "--reserved-subdomains"),
        ({"subdomain_prefix": "Bad!"}, "--subdomain-prefix"),
        ({"subdomain_prefix": "a" * 21}, "--subdomain-prefix"),
        ({"subdomain_prefix": "-lead"}, "--subdomain-prefix"),
        ({"subdomain_length": "33"}, "--subdomain-length"),
        ({"subdomain_length": "eight"}, "--subdomain-length"),
        ({"subdomain_grace": "-1"}, "--subdomain-grace"),
        ({"subdomain_grace": "inf"}, "--subdomain-grace"),
        ({"tunnel_keepalive": "0"}, "--tunnel-keepalive"),
        ({"tunnel_keepalive": "600.5"}, "--tunnel-keepalive"),
        ({"cipher": "rot13"}, "--cipher"),
        ({"congestion": "vegas"}, "--congestion"),
        ({"max_body_size": "-1"}, "--max-body-size"),
        ({"max_body_size": "1.5"}, "--max-body-size"),
        ({"tcp_passthrough": ["nope"]}, "--tcp-passthrough"),
        ({"log_level": "verbose"}, "--log-level"),
        ({"log_format": "xml"}, "--log-format"),
        ({"tls_self_signed": "sure"}, "--tls-self-signed"),
    ],
)
def test_each_bad_value_names_its_flag(cli: dict[str, object], flag: str) -> None:
    assert error_of(cli).startswith(flag + ": ")


def test_value_normalisation() -> None:
    config = build(
        {
            "base_domain": "Tunnels.Example.COM.",
            "reserved_subdomains": "WWW, mail ,www",
            "subdomain_prefix": "T-",
            "cipher": "AES256GCM",
            "max_body_size": "0",
            "subdomain_grace": "0",
        }
    )
    assert config.base_domain == "tunnels.example.com"
    assert config.reserved_subdomains == ["www", "mail"]
    assert config.subdomain_prefix == "t-"
    assert config.cipher == "aes256gcm"
    assert config.max_body_size == 0
    assert config.subdomain_grace == 0.0


@pytest.mark.parametrize("word", ["off", "OFF", "none"])
def test_http_can_be_turned_off(word: str) -> None:
    assert build({"http_addr": word}).http_addr is None


def test_https_needs_cert_and_key_or_self_signed(pem_pair: tuple[Path, Path]) -> None:
    cert, key = pem_pair
    message = error_of({"https_addr": ":8443"})
    assert message.startswith("--https-addr: ")
    assert "--tls-cert" in message and "--tls-self-signed" in message
    config = build({"https_addr": ":8443", "tls_cert": str(cert), "tls_key": str(key)})
    assert (config.tls_cert, config.tls_key) == (cert, key)
    assert build({"https_addr": ":8443", "tls_self_signed": True}).tls_self_signed


@pytest.mark.parametrize("given", ["tls_cert", "tls_key"])
def test_cert_and_key_go_together(pem_pair: tuple[Path, Path], given: str) -> None:
    path = pem_pair[0] if given == "tls_cert" else pem_pair[1]
    message = error_of({"https_addr": ":8443", given: str(path)})
    assert "--tls-cert" in message and "--tls-key" in message
    missing = "--tls-key" if given == "tls_cert" else "--tls-cert"
    assert message.startswith(missing + ": ")


def test_self_signed_conflicts_with_files(pem_pair: tuple[Path, Path]) -> None:
    cert, key = pem_pair
    cli = {"https_addr": ":8443", "tls_cert": str(cert), "tls_key": str(key), "tls_self_signed": True}
    assert error_of(cli).startswith("--tls-self-signed: ")


def test_tls_files_must_exist(tmp_path: Path) -> None:
    cli = {"tls_cert": str(tmp_path / "no.pem"), "tls_key": str(tmp_path / "no.key")}
    assert error_of(cli).startswith("--tls-cert: ")


def test_tcp_port_clashes_are_caught() -> None:
    assert "already used by --http-addr" in error_of({"tcp_passthrough": ["8080:h:80"]})
    assert error_of({"tcp_passthrough": ["22:h:22", "22:h:23"]}).startswith("--tcp-passthrough: ")
    assert error_of({"https_addr": ":8080", "tls_self_signed": True}).startswith("--https-addr: ")
    # Different hosts do not clash; a port of 0 never does.
    config = build({"http_addr": "127.0.0.1:9000", "https_addr": "127.0.0.2:9000", "tls_self_signed": True})
    assert config.https_addr is not None
    assert build({"http_addr": ":0", "tcp_passthrough": ["0:h:1"]}).http_addr == HostPort(
        host="0.0.0.0", port=0
    )


def test_model_is_frozen_and_strict() -> None:
    config = RelayConfig()
    with pytest.raises(ValueError):
        config.subdomain_length = 9  # type: ignore[misc]
    with pytest.raises(ValueError):
        RelayConfig(no_such_field=1)  # type: ignore[call-arg]


def test_unknown_cli_key_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="not RelayConfig fields"):
        build({"no_such_field": 1})


# -- logs ---------------------------------------------------------------------------------------


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("seamless.relay", logging.INFO, __file__, 1, "tunnel %s up", ("abc",), None)
    record.created = 1795600800.0  # 2026-11-25T10:00:00Z
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_text_log_line() -> None:
    line = TextFormatter().format(_record(subdomain="abc", peer="1.2.3.4 x"))
    assert line == '2026-11-25T10:00:00Z INFO seamless.relay tunnel abc up subdomain=abc peer="1.2.3.4 x"'


def test_json_log_line() -> None:
    doc = json.loads(JsonFormatter().format(_record(subdomain="abc", count=3)))
    assert doc == {
        "ts": "2026-11-25T10:00:00Z",
        "level": "info",
        "logger": "seamless.relay",
        "msg": "tunnel abc up",
        "subdomain": "abc",
        "count": 3,
    }


# -- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("SEAMLESS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--subdomain-length", "2"], "Error: --subdomain-length: must be between 4 and 32 (got 2)"),
        (["--seam-addr", "nonsense"], "Error: --seam-addr: expected HOST:PORT"),
        (
            ["--https-addr", ":8443"],
            "Error: --https-addr: needs --tls-cert and --tls-key, or --tls-self-signed",
        ),
        (["--tcp-passthrough", "22:h:22", "--tcp-passthrough", "x"], "Error: --tcp-passthrough: "),
    ],
)
def test_cli_bad_value_exits_2(clean_env: None, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message)


def test_cli_env_error_exits_2(clean_env: None) -> None:
    result = CliRunner().invoke(app, [], env={"SEAMLESS_CIPHER": "rot13"})
    assert result.exit_code == 2
    assert "Error: --cipher: " in result.stderr and "SEAMLESS_CIPHER" in result.stderr


def test_cli_help_lists_every_field(clean_env: None) -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for field in RelayConfig.model_fields:
        assert "--" + field.replace("_", "-") in result.output
    assert "--config" in result.output and "--version" in result.output


def test_cli_version(clean_env: None) -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("seamless-relay ")


def test_cli_runs_the_server_with_the_merged_config(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[RelayConfig] = []
    logging_calls: list[tuple[str, str]] = []
    fake_server = types.ModuleType("seamless_relay.server")
    fake_server.run = lambda config: seen.append(config) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "seamless_relay.server", fake_server)
    monkeypatch.setattr(
        "seamless_relay.logs.configure_logging", lambda lvl, fmt: logging_calls.append((lvl, fmt))
    )
    path = write_toml(tmp_path, 'log-format = "json"\nsubdomain_length = 10\nbase_domain = "file.example"\n')
    args = [
        "--config",
        str(path),
        "--subdomain-length",
        "12",
        "--tcp-passthrough",
        "2222:[::1]:22",
        "--no-tls-self-signed",
    ]
    result = CliRunner().invoke(app, args, env={"SEAMLESS_BASE_DOMAIN": "env.example"})
    assert result.exit_code == 7, result.output
    (config,) = seen
    assert (config.subdomain_length, config.base_domain, config.log_format) == (12, "env.example", "json")
    assert [str(rule) for rule in config.tcp_passthrough] == ["2222:[::1]:22"]
    assert config.tls_self_signed is False
    assert logging_calls == [("info", "json")]


def test_cli_config_from_env_var(clean_env: None, tmp_path: Path) -> None:
    path = write_toml(tmp_path, "bogus = 1\n")
    result = CliRunner().invoke(app, [], env={"SEAMLESS_CONFIG": str(path)})
    assert result.exit_code == 2
    assert "Error: --config: " in result.stderr and "'bogus'" in result.stderr


def test_python_dash_m_reports_bad_flag(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEAMLESS_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "seamless_relay", "--subdomain-length", "2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Error: --subdomain-length: must be between 4 and 32 (got 2)" in proc.stderr
    assert proc.stdout == ""
