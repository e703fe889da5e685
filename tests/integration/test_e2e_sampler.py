"""The e2e sampler's pg_stat_activity query (tests/e2e/traffic.py `Sampler`), on real
PostgreSQL 17 behind PgBouncer 1.24: it runs on kind only in the e2e tier, so its SQL, its shell
quoting and its parsing are checked here, with the psql loop's exact command line.

Clients log in through PgBouncer with application_name `<pod>/<pid>` (as the library's engines
do) and each holds a transaction, so each holds its own server connection: the sampler counts
them in total and per pod, and the picture groups the pods into their consumers. A PgBouncer of
the test's own (stopped after it, with its server connections); other tests' idle server
connections of the role may be counted too, under their own names.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import devstack

E2E = Path(__file__).resolve().parents[1] / "e2e"
sys.path.insert(0, str(E2E))
import picture  # noqa: E402
from kube import ADMIN_PSQL  # noqa: E402
from traffic import Sampler  # noqa: E402

PODS = ("pw-poolwarden-app-6d9f7-abcde", "pw-poolwarden-app-6d9f7-fghij", "pw-worker-5c4b-zzzzz")


def sample(stack: devstack.Stack, sampler: Sampler) -> str:
    """One attempt of the sampler's loop (its psql command line), as it prints it."""
    script = (f'if out=$({ADMIN_PSQL} -X -q -At -F " " -c "{sampler.sql}" 2>&1); '
              'then echo "S $out"; else echo "E $out"; fi')  # fmt: skip
    env = dict(os.environ, POSTGRES_PASSWORD=stack.superuser_password, POSTGRES_USER="postgres",
               POSTGRES_DB=devstack.APP_DB, PGPORT=str(stack.pg_port))  # fmt: skip
    out = subprocess.run(stack.chroot_cmd("sh", "-c", script), env=env, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    return out.stdout


def test_the_sampler_counts_server_connections_per_pod(stack, start_bouncer):
    bouncer = start_bouncer()
    sampler = Sampler(None, role=devstack.APP_USER)  # not started: one attempt at a time

    async def hold() -> None:
        clients = []
        try:
            for pod in (*PODS, "odd name,with:chars"):
                client = await asyncpg.connect(
                    host="127.0.0.1", port=bouncer.port, user=devstack.APP_USER,
                    password=stack.app_password, database=devstack.APP_DB,
                    server_settings={"application_name": f"{pod}/4242"}, statement_cache_size=0,
                )  # fmt: skip
                clients.append(client)
                await client.execute("BEGIN")
                await client.fetchval("SELECT 1")  # a server connection held until COMMIT
            line = await asyncio.to_thread(sample, stack, sampler)
        finally:
            for client in clients:
                await client.close()
        sampler._parse(line)

    asyncio.run(hold())
    assert sampler.errors == []
    ((at, total),) = sampler.samples
    ((_, by_pod),) = sampler.by_pod
    assert total == sum(by_pod.values()) >= 4, (sampler.samples, by_pod)
    assert {pod: by_pod.get(pod) for pod in PODS} == {pod: 1 for pod in PODS}, by_pod
    assert by_pod.get("odd_name_with_chars") == 1, by_pod  # one field, whatever the name holds
    deployments = {"pw-poolwarden-app": "app", "pw-worker": "worker"}
    ((_, consumers),) = picture.by_consumer(sampler.by_pod, deployments)
    assert (consumers["app"], consumers["worker"]) == (2, 1), consumers
    assert consumers["other"] == total - 3, consumers


def test_no_connection_is_a_sample_of_zero(stack):
    sampler = Sampler(None, role="nobody_connects_as_this")
    sampler._parse(sample(stack, sampler))
    assert [n for _, n in sampler.samples] == [0]
    assert [counts for _, counts in sampler.by_pod] == [{}]
