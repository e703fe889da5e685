"""Two languages, one format: the PgBouncer entrypoint's bash check of the sizing include
(`pgbouncer/entrypoint.sh --check-sizing FILE`) accepts every file poolwarden.pgbouncer_ini
renders, and refuses what pgbouncer_ini.parse refuses. Needs bash only, not PgBouncer."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolwarden import pgbouncer_ini

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "pgbouncer" / "entrypoint.sh"
ADMIN_CONSOLE = pgbouncer_ini.RESERVED_ALIASES[0]  # "pgbouncer", PgBouncer's admin console


def check_sizing(text: str) -> tuple[int, str]:
    """Exit status and output of the entrypoint's --check-sizing on a file holding `text`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sizing.ini"
        path.write_text(text)
        out = subprocess.run(
            ["bash", str(ENTRYPOINT), "--check-sizing", str(path)],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            capture_output=True, text=True, timeout=30,
        )
    assert out.stderr == "", out.stderr  # --check-sizing neither logs nor starts anything
    return out.returncode, out.stdout.replace(str(path), "FILE").strip()


def python_refuses(text: str) -> str | None:
    """pgbouncer_ini.parse's error for `text`, None when it accepts it."""
    try:
        pgbouncer_ini.parse(text)
    except pgbouncer_ini.SizingError as exc:
        return str(exc)
    return None


GLOBALS = (
    "; poolwarden sizing for default/app, generation 3. Written by the operator; do not edit.\n"
    "default_pool_size = 18\nmax_client_conn = 1000\nmax_db_connections = 20\n"
    "max_user_connections = 20\nreserve_pool_size = 2\n"
)
ALIAS = "app = host=pg.default.svc port=5432 dbname=poolwarden pool_size=15\n"

from sizing_strategies import sizings  # noqa: E402


@settings(max_examples=40, deadline=None)  # one bash process per example
@given(sizings, st.integers(0, 10**9))
def test_every_rendered_include_is_usable_for_the_entrypoint(sizing, generation):
    text = pgbouncer_ini.render(sizing, budget="ns/app", generation=generation)
    status, out = check_sizing(text)
    assert status == 0, out
    # The entrypoint read the same limits (its one-line summary, as it logs them).
    assert f"max_user_connections={sizing.max_user_connections} " in out, out
    for db in sizing.databases:
        assert f" {db.name}={db.pool_size}" in out, out


def test_the_designs_example_is_usable_with_both_aliases():
    text = GLOBALS + "\n[databases]\n" + ALIAS + (
        "worker = host=pg.default.svc port=5432 dbname=poolwarden pool_size=5\n")
    assert python_refuses(text) is None
    assert check_sizing(text) == (
        0, "FILE: usable: default_pool_size=18 max_client_conn=1000 max_db_connections=20 "
           "max_user_connections=20 reserve_pool_size=2 aliases: app=15 worker=5")


def test_spacing_and_the_order_of_an_alias_settings_are_free_in_both():
    text = GLOBALS.replace(" = ", "=") + "  [databases]  \n\t; a comment\n" + (
        "app=pool_size=15   dbname=poolwarden\tport=5432 host=pg.default.svc  \n")
    assert python_refuses(text) is None
    assert check_sizing(text)[1].endswith("aliases: app=15")


def test_globals_only_without_a_databases_line_are_usable():
    assert python_refuses(GLOBALS) is None
    assert check_sizing(GLOBALS)[0] == 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (GLOBALS + "pool_mode = session\n", "line 7: expected KEY = <integer>"),
        (GLOBALS.replace("max_user_connections = 20\n", ""), "missing max_user_connections"),
        (GLOBALS.replace("max_user_connections = 20", "max_user_connections = 0"),
         "max_user_connections must be >= 1"),
        (GLOBALS.replace("default_pool_size = 18", "default_pool_size = lots"),
         "default_pool_size must be an integer"),
        (GLOBALS.replace("max_client_conn = 1000", "max_client_conn = 9223372036854775808"),
         "max_client_conn must be an integer from 0 to 9223372036854775807"),
        (GLOBALS + "max_client_conn = 5\n", "line 7: max_client_conn given twice"),
        (GLOBALS + "[databases]\n" + ALIAS.replace("app =", "a$pp ="),
         "alias name 'a$pp' must match"),
        (GLOBALS + "[databases]\n" + ALIAS.replace("pool_size=15", "pool_size=15 $x"),
         "alias app: unexpected '$x'"),
        (GLOBALS + "[databases]\n" + ALIAS.replace("pool_size=15", "pool_size=15 auth_user=x"),
         "alias app: unexpected 'auth_user=x'"),
        (GLOBALS + "[databases]\n" + ALIAS.replace("host=pg.default.svc", "host=pg default"),
         "alias app: unexpected 'default'"),
        (GLOBALS + "[databases]\n" + ALIAS.replace("host=pg.default.svc", "host=$HOST"),
         "alias app: host must match"),
        (GLOBALS + "[databases]\n" + ALIAS.replace("dbname=poolwarden", "dbname=pool-warden"),
         "alias app: dbname must match"),
        (GLOBALS + "[databases]\n" + ALIAS.replace("pool_size=15", "pool_size=0"),
         "alias app: pool_size must be >= 1"),
        (GLOBALS + "[databases]\n" + ALIAS.replace(" pool_size=15", ""),
         "alias app is missing pool_size"),
        (GLOBALS + "[databases]\n" + ALIAS.replace("pool_size=15", "pool_size=15 pool_size=1"),
         "alias app: pool_size given twice"),
        (ALIAS + GLOBALS, "line 1: the alias 'app' comes before the [databases] line"),
        (GLOBALS + "[databases]\n" + ALIAS + ALIAS, "alias app given twice"),
        (GLOBALS + "[databases]\n" + ALIAS.replace("port=5432", "port=65536"),
         "alias app: port must be 1 .. 65535"),
        (GLOBALS + "[databases]\n" + ALIAS.replace("app =", "App ="), "alias name 'App'"),
        (GLOBALS + "[databases]\n" + ALIAS.replace("app =", f"{ADMIN_CONSOLE} ="),
         "alias name 'pgbouncer' is PgBouncer's admin console"),
        (GLOBALS + "[databases]\nreserve_pool_size = 50\n",
         "reserve_pool_size belongs before the [databases] line"),
        (GLOBALS + "[databases]\n[databases]\n", "only one [databases] section"),
        (GLOBALS + "[pgbouncer]\nmax_client_conn = 1\n", "only one [databases] section"),
    ],
    ids=["unknown-key", "missing-max-user", "max-user-0", "not-a-number", "above-int64",
         "key-twice", "dollar-in-name", "dollar-parameter", "other-parameter",
         "host-with-space", "host-variable", "dbname-with-dash", "pool-size-0",
         "pool-size-missing", "pool-size-twice", "alias-before-databases", "alias-twice",
         "port-too-big", "upper-case-name", "admin-console", "global-key-in-databases",
         "databases-twice",
         "other-section"],
)
def test_python_and_the_entrypoint_both_refuse(text, reason):
    assert python_refuses(text) is not None, f"pgbouncer_ini.parse accepted {text!r}"
    status, out = check_sizing(text)
    assert status == 1, out
    assert out.startswith("FILE: not usable: ") and reason in out, out


def test_a_missing_file_is_not_usable_and_usage_errors_exit_2():
    status, out = check_sizing(GLOBALS)
    assert status == 0
    out = subprocess.run(["bash", str(ENTRYPOINT), "--check-sizing", "/nonexistent/sizing.ini"],
                         capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stdout.strip()) == (
        1, "/nonexistent/sizing.ini: not usable: cannot read /nonexistent/sizing.ini")
    out = subprocess.run(["bash", str(ENTRYPOINT), "--check-sizing"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "usage" in out.stderr


def test_the_include_is_the_templates_last_setting_and_the_entrypoint_insists(tmp_path):
    template = REPO / "pgbouncer" / "pgbouncer.ini.tmpl"
    settings_lines = [line.strip() for line in template.read_text().splitlines()
                      if line.strip() and not line.lstrip().startswith((";", "#"))]
    assert settings_lines[-1] == "%include @CONF_DIR@/sizing.ini"
    # A template with a setting after the include would put it into the include's
    # [databases] section: the entrypoint stops before rendering anything.
    bad = tmp_path / "pgbouncer.ini.tmpl"
    bad.write_text(template.read_text() + "server_lifetime = 10\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGBOUNCER_TEMPLATE": str(bad),
           "PGBOUNCER_CONF_DIR": str(tmp_path / "conf"), "PGBOUNCER_DB_HOST": "127.0.0.1",
           "PGBOUNCER_DB_NAME": "app", "PGBOUNCER_DB_USER": "app", "PGBOUNCER_DB_PASSWORD": "x",
           "PGBOUNCER_ADMIN_PASSWORD": "x", "PGBOUNCER_STATS_PASSWORD": "x"}
    out = subprocess.run(["bash", str(ENTRYPOINT)], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2, out
    assert "must end with '%include @CONF_DIR@/sizing.ini'" in out.stderr, out.stderr
    assert not (tmp_path / "conf").exists()
