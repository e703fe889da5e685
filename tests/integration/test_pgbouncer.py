"""The PgBouncer image's entrypoint on the real PgBouncer 1.24: sizing include, RELOAD on
change (never a restart), prompt enforcement of lowered limits, safe shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import asyncpg
import load
import pytest
from hammer import Hammer, Sampler

from poolwarden import pgbouncer_ini


def sizing(pool: int, max_db: int, *, generation: int, reserve: int = 0, clients: int = 1000,
           max_user: int | None = None,
           databases: tuple[pgbouncer_ini.Database, ...] = ()) -> str:
    """A sizing include as the operator renders it; max_user_connections = max_db unless set."""
    return pgbouncer_ini.render(
        pgbouncer_ini.Sizing(default_pool_size=pool, max_db_connections=max_db,
                             reserve_pool_size=reserve, max_client_conn=clients,
                             max_user_connections=max_db if max_user is None else max_user,
                             databases=databases),
        budget="default/app", generation=generation)


def show_config(bouncer) -> dict[str, str]:
    return {row[0]: row[1] for row in bouncer.admin("SHOW CONFIG")}


def wait_until(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def test_env_fallback_then_sizing_file_then_bad_then_missing_file(start_bouncer):
    bouncer = start_bouncer(PGBOUNCER_DEFAULT_POOL_SIZE="3", PGBOUNCER_MAX_DB_CONNECTIONS="7")
    config = show_config(bouncer)
    assert (config["default_pool_size"], config["max_db_connections"]) == ("3", "7")
    assert config["pool_mode"] == "transaction"
    assert config["auth_type"] == "scram-sha-256"
    assert int(config["max_prepared_statements"]) > 0
    pid_before = bouncer.admin("SHOW STATS")  # the process answers; now change the file

    bouncer.write_sizing(sizing(5, 12, generation=1))
    wait_until(lambda: show_config(bouncer)["max_db_connections"] == "12", "the sizing file")
    assert show_config(bouncer)["default_pool_size"] == "5"
    assert "RELOAD done" in bouncer.log_text()
    assert pid_before and bouncer.proc.poll() is None  # reloaded in place, not restarted

    bouncer.write_sizing("default_pool_size = lots\n")
    wait_until(lambda: "is not usable" in bouncer.log_text(), "the bad-file error")
    time.sleep(2)  # a few more watch rounds: the error is logged once, the sizing kept
    assert bouncer.log_text().count("is not usable") == 1
    assert show_config(bouncer)["max_db_connections"] == "12"

    (bouncer.sizing_dir / "sizing.ini").unlink()  # the ConfigMap goes away: keep what works
    wait_until(lambda: "disappeared" in bouncer.log_text(), "the missing-file error")
    assert show_config(bouncer)["max_db_connections"] == "12"


def test_reload_under_load_fails_no_request(start_bouncer, start_app):
    bouncer = start_bouncer()
    bouncer.write_sizing(sizing(10, 20, generation=1))
    app = start_app(workers=2, POOLWARDEN_DB_PORT=str(bouncer.port), POOLWARDEN_POOL_SIZE="4")

    async def scenario() -> tuple[load.LoadResult, list[float]]:
        stop = asyncio.Event()
        result = load.LoadResult()
        reloaded: list[float] = []
        traffic = asyncio.create_task(load.probe_load(app.url, tasks=12, stop=stop,
                                                      sleep=0.005, max_seconds=120,
                                                      result=result))
        for generation, (pool, max_db) in enumerate([(4, 8), (12, 24), (3, 6), (8, 16)], 2):
            while result.total < 12 * (generation - 1):  # traffic flows before each change
                await asyncio.sleep(0.05)
            bouncer.write_sizing(sizing(pool, max_db, generation=generation))
            await asyncio.to_thread(wait_until, lambda m=max_db: show_config(bouncer)[
                "max_db_connections"] == str(m), "reload")
            reloaded.append(time.monotonic())
        await asyncio.sleep(1.0)
        stop.set()
        return await traffic, reloaded

    result, reloaded = asyncio.run(scenario())
    assert result.failed == 0, result.summary()
    assert result.wrong == 0, result.summary()
    for reloaded_at in reloaded:  # requests kept completing after every reload
        assert any(done > reloaded_at for done in result.finished), result.summary()
    assert bouncer.log_text().count("RELOAD done") >= 4
    assert bouncer.log_text().count("RECONNECT done") >= 2  # the two lowering steps


@pytest.mark.parametrize("reconnect", [True, False], ids=["reconnect", "reload-only"])
def test_max_db_connections_holds_under_200_clients_and_after_lowering(
        reconnect, start_bouncer, stack, tmp_path):
    bouncer = start_bouncer(PGBOUNCER_RECONNECT_ON_LOWER="1" if reconnect else "0")
    bouncer.write_sizing(sizing(10, 10, generation=1))
    wait_until(lambda: show_config(bouncer)["max_db_connections"] == "10", "initial sizing")
    app_name = f"hammer-{bouncer.port}"

    async def scenario() -> dict:
        hammer = Hammer(port=bouncer.port, password=stack.app_password, clients=200,
                        app_name=app_name)
        sampler = Sampler(stack.dsn(via_bouncer=False, superuser=True), app_name)
        await sampler.start()
        await hammer.start()
        await hammer.all_connected()
        await asyncio.sleep(3)  # all 200 hammering: sample the limit under full load
        loaded_at = time.monotonic() - 3
        lowered_at = time.monotonic()
        bouncer.write_sizing(sizing(4, 4, generation=2))
        await asyncio.sleep(8)
        await sampler.stop()  # first: only samples taken under full load count
        await hammer.stop()
        settled = sampler.settled_at(4, lowered_at)
        return {
            "ok": hammer.ok, "errors": hammer.errors[:5], "error_count": len(hammer.errors),
            "max_before": sampler.max_between(loaded_at, lowered_at),
            "max_last_2s": sampler.max_between(lowered_at + 6),
            "seconds_to_limit": None if settled is None else round(settled - lowered_at, 2),
        }

    figures = asyncio.run(scenario())
    # Kept for inspection (docs/data-path.md quotes a run); the assertions below carry them too.
    (tmp_path / "figures.json").write_text(json.dumps(figures, indent=2))
    assert figures["error_count"] == 0, figures
    assert 0 < figures["max_before"] <= 10, figures
    if reconnect:
        # RELOAD + RECONNECT: excess server connections close as they are released.
        assert figures["seconds_to_limit"] is not None, figures
        assert figures["max_last_2s"] <= 4, figures
    else:
        # RELOAD alone: connections above the new limit stay while clients keep them busy.
        assert figures["max_last_2s"] > 4, figures


def test_sigterm_lets_the_running_transaction_finish(start_bouncer, stack):
    bouncer = start_bouncer()

    async def scenario() -> tuple[int, str]:
        conn = await asyncpg.connect(host="127.0.0.1", port=bouncer.port, user="app",
                                     password=stack.app_password, database="app")
        tx = conn.transaction()
        await tx.start()
        await conn.execute("CREATE TEMP TABLE IF NOT EXISTS t_sigterm (x int) ON COMMIT DROP")
        os.kill(bouncer.proc.pid, signal.SIGTERM)
        await asyncio.sleep(1.0)
        still_running = bouncer.proc.poll() is None  # waits for the open transaction
        value = await conn.fetchval("SELECT 41 + 1")
        await tx.commit()
        await conn.close()
        return value, still_running

    value, still_running = asyncio.run(scenario())
    assert (value, still_running) == (42, True)
    assert bouncer.proc.wait(timeout=30) == 0
    assert "safe shutdown" in bouncer.log_text()
