"""The ``poolwarden`` command line: ``poolwarden plan`` prints the planner's answer,
``poolwarden status`` the ledger of a budget in a cluster.

``plan`` runs the same planner as the operator, so you can check a budget before you apply it::

    poolwarden plan --max-connections 100 --reserved 10 --pgbouncer-replicas 2 \\
        --consumer web:replicas=4,workers=4,weight=3 --consumer worker:replicas=2,threads=8

Nonsense input exits 2 with a message that names the flag to fix.

``status`` (the ``status`` extra: the Kubernetes client) reads a ConnectionBudget and its plan
and sizing ConfigMaps and prints what was planned, what every pod applied and what is in use
(`poolwarden.ledgerview`)::

    poolwarden status -n shop [BUDGET] [--kubeconfig PATH] [--context NAME] [-o json]

Exit 0: printed; 1: the cluster could not be read (no such budget, no access, unreachable: the
message says what to change); 2: usage, or the extra is not installed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

from poolwarden import ledgerview, planner

CONSUMER_KEYS = ("replicas", "workers", "weight", "surge", "overflow", "threads", "maxpool")
CONSUMER_HELP = (
    "NAME:replicas=N[,workers=N][,weight=N][,surge=N|P%%]"
    f"[,overflow={'|'.join(planner.OVERFLOW_POLICIES)}][,threads=N][,maxpool=N]; "
    "repeat for each Deployment (surge: the rollout maxSurge, default 0; threads: gthread "
    f"threads per worker, 0 = async; maxpool: a worker's most connections, async default "
    f"{planner.ASYNC_WORKER_CAP})"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: usage + exit 2
        self.print_usage(sys.stderr)
        self.exit(2, f"poolwarden: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="poolwarden", description="Connection budgets for Python apps on PgBouncer."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    plan = commands.add_parser("plan", help="size every pool for a budget and print the plan")
    plan.add_argument(
        "--max-connections", type=int, required=True, help="PostgreSQL max_connections"
    )
    plan.add_argument("--reserved", type=int, default=0, help="connections kept out of the budget")
    plan.add_argument("--pgbouncer-replicas", type=int, default=1, help="PgBouncer pods")
    plan.add_argument(
        "--pgbouncer-surge", default="0", help="PgBouncer rollout maxSurge (N or P%%)"
    )
    plan.add_argument(
        "--max-client-conn",
        type=int,
        default=planner.DEFAULT_MAX_CLIENT_CONN,
        help="PgBouncer max_client_conn per replica (the client side must fit it x replicas)",
    )
    plan.add_argument(
        "--consumer", action="append", required=True, metavar="SPEC", help=CONSUMER_HELP
    )
    plan.add_argument(
        "--read-replicas",
        type=int,
        default=0,
        help="streaming standbys behind the read-only Service (0: no read plan)",
    )
    plan.add_argument(
        "--read-max-connections",
        type=int,
        help="each standby's max_connections (default: --max-connections)",
    )
    plan.add_argument(
        "--read-reserved",
        type=int,
        help="connections kept out of each standby's budget (default: --reserved)",
    )
    plan.add_argument("--output", choices=("table", "json"), default="table")
    status = commands.add_parser(
        "status",
        help="print a budget's ledger from the cluster: planned, applied, in use, per pod",
    )
    status.add_argument(
        "budget", nargs="?", help="ConnectionBudget name (default: every budget of the namespace)"
    )
    status.add_argument(
        "-n", "--namespace", help="the budget's namespace (default: the context's namespace)"
    )
    status.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in a pod "
        "its ServiceAccount)"
    )  # fmt: skip
    status.add_argument("--context", help="kubeconfig context (default: its current context)")
    status.add_argument("-o", "--output", choices=("text", "json"), default="text")
    return parser


class UsageError(Exception):
    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")


def parse_consumer(text: str) -> planner.Consumer:
    """``web:replicas=4,workers=4,weight=3`` -> Consumer; UsageError on anything else."""
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or not name:
        raise UsageError("--consumer", f"expected NAME:key=value,..., got {text!r}")
    values: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in CONSUMER_KEYS:
            raise UsageError(
                "--consumer", f"{name}: unknown key {key!r}; known: {', '.join(CONSUMER_KEYS)}"
            )
        if key in values:
            raise UsageError("--consumer", f"{name}: {key} given twice")
        values[key] = value.strip()
    if "replicas" not in values:
        raise UsageError("--consumer", f"{name}: replicas=N is required")
    numbers = {}
    for key in ("replicas", "workers", "weight", "threads", "maxpool"):
        if key in values:
            try:
                numbers[key] = int(values[key])
            except ValueError:
                raise UsageError(
                    "--consumer", f"{name}: {key} must be an integer, got {values[key]!r}"
                ) from None
    try:
        surge = planner.resolve_surge(
            max(0, numbers["replicas"]), "RollingUpdate", values.get("surge", "0")
        )
    except planner.PlannerError as exc:
        raise UsageError("--consumer", f"{name}: surge {exc.reason}") from None
    return planner.Consumer(
        name=name,
        replicas=numbers["replicas"],
        workers=numbers.get("workers", 1),
        weight=numbers.get("weight", 1),
        surge=surge,
        overflow=values.get("overflow", "none"),
        threads=numbers.get("threads", 0),
        max_pool_per_worker=numbers.get("maxpool", 0),
    )


_FLAGS = {
    "maxConnections": "--max-connections",
    "reserved": "--reserved",
    "pgbouncer.replicas": "--pgbouncer-replicas",
    "pgbouncer.surge": "--pgbouncer-surge",
    "maxSurge": "--pgbouncer-surge",
    "pgbouncer.maxClientConn": "--max-client-conn",
    "readReplicas.replicas": "--read-replicas",
    "readReplicas.maxConnections": "--read-max-connections",
    "readReplicas.reserved": "--read-reserved",
}


def _flag_for(field: str) -> str:
    return _FLAGS.get(field, "--consumer")


def run_plan(args: argparse.Namespace) -> planner.Plan:
    return run_plans(args).write


def run_plans(args: argparse.Namespace) -> planner.ReadWritePlan:
    """The write plan and, with ``--read-replicas`` > 0, the read plan."""
    consumers = [parse_consumer(text) for text in args.consumer]
    read_max = getattr(args, "read_max_connections", None)
    read_reserved = getattr(args, "read_reserved", None)
    reads = planner.ReadServers(
        getattr(args, "read_replicas", 0),
        args.max_connections if read_max is None else read_max,
        args.reserved if read_reserved is None else read_reserved,
    )
    try:
        surge = planner.resolve_surge(
            max(0, args.pgbouncer_replicas), "RollingUpdate", args.pgbouncer_surge
        )
        return planner.plan_with_reads(
            planner.Budget(args.max_connections, args.reserved),
            planner.PgBouncer(args.pgbouncer_replicas, surge, args.max_client_conn),
            consumers,
            reads,
        )
    except planner.PlannerError as exc:
        raise UsageError(_flag_for(exc.field), str(exc)) from None


COLUMNS = (
    ("consumer", "name"),
    ("replicas", "replicas"),
    ("surge", "surge"),
    ("workers", "workers"),
    ("weight", "weight"),
    ("server_pool", "server_pool"),
    ("server_total", "server_total"),
    ("threads", "threads"),
    ("cap", "cap"),
    ("pool_size", "pool_size"),
    ("max_overflow", "max_overflow"),
    ("per_pod", "per_pod"),
)
"""The consumer table: server side (``server_pool`` in each PgBouncer pod, ``server_total`` over
the replicas), then client side (a worker's ``cap``, its ``pool_size`` + ``max_overflow``, and
what one pod opens)."""


def _consumer_rows(consumers: tuple[planner.ConsumerPlan, ...]) -> list[str]:
    head = tuple(title for title, _ in COLUMNS)
    rows = [tuple(getattr(c, attr) for _, attr in COLUMNS) for c in consumers]
    cells = [tuple(str(v) for v in row) for row in [head, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    return [
        "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]


def render_read_table(read: planner.ReadPlan) -> str:
    """The read plan, printed after the write plan's table."""
    lines = [
        f"read: {read.replicas} standby(s), budget {read.budget} each (max_connections "
        f"{read.max_connections} - reserved {read.reserved})"
        f"   state {'OVERCOMMITTED' if read.overcommitted else 'ok'}",
        f"read aliases per PgBouncer pod: max_db_connections {read.max_db_connections}",
        f"read server total {read.server_total} <= budget {read.budget} of ONE standby "
        f"(worst case: every read connection of the {read.pgbouncer_pods} PgBouncer pod(s) on "
        f"one standby; {read.capacity} in steady state)",
        "",
        *_consumer_rows(read.consumers),
        "",
        f"read client total {read.client_total} {'>' if read.client_short else '<='} "
        f"{read.client_limit} client slots left by the write plan",
        f"read utilization {read.utilization:.2f}",
        "",
        read.explanation,
    ]
    return "\n".join(lines) + "\n"


def render_table(result: planner.Plan) -> str:
    b = result.pgbouncer
    fits = ">" if result.client_short else "<="
    lines = [
        f"budget {result.budget} (max_connections {result.max_connections}"
        f" - reserved {result.reserved})"
        f"   state {'OVERCOMMITTED' if result.overcommitted else 'ok'}",
        f"pgbouncer x{b.replicas} (+{b.surge} surge): max_db_connections {b.max_db_connections}, "
        f"max_user_connections {b.max_user_connections}, default_pool_size "
        f"{b.default_pool_size}, reserve_pool_size {b.reserve_pool_size}, "
        f"max_client_conn {b.max_client_conn}",
        f"server total {result.server_total} <= budget {result.budget} "
        f"({result.pgbouncer_pods} PgBouncer pod(s) may hold server connections; "
        f"{result.capacity} in steady state)",
        "",
        *_consumer_rows(result.consumers),
    ]
    lines += [
        "",
        f"client total {result.client_total} {fits} limit {result.client_limit} "
        f"(max_client_conn {b.max_client_conn} x {max(1, b.replicas)})",
        f"utilization {result.utilization:.2f}",
        "",
        result.explanation,
    ]
    return "\n".join(lines) + "\n"


STATUS_EXTRA = "pip install 'poolwarden[status]'"


def run_status(args: argparse.Namespace) -> int:
    """Read the budget(s) and print the ledger; 1 with the reason when the cluster cannot be
    read, 2 when the Kubernetes client (the ``status`` extra) is missing."""
    try:
        from poolwarden import kube  # the one module that imports the Kubernetes client
    except ImportError as exc:
        sys.stderr.write(f"poolwarden status: error: {exc}\n")
        if STATUS_EXTRA not in str(exc):
            sys.stderr.write(f"poolwarden status: install the client with {STATUS_EXTRA}\n")
        return 2
    try:
        cluster = kube.connect(args.kubeconfig, args.context)
        namespace = args.namespace or cluster.namespace
        found = [
            (budget, kube.configmaps(cluster, budget))
            for budget in kube.budgets(cluster, namespace, args.budget)
        ]
    except kube.ReadError as exc:
        sys.stderr.write(f"poolwarden status: error: {exc}\n")
        return 1
    now = datetime.datetime.now(datetime.UTC)
    ledgers = [ledgerview.ledger(budget, files, now) for budget, files in found]
    if args.output == "json":
        sys.stdout.write(json.dumps(ledgers, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write("\n".join(ledgerview.render(item) for item in ledgers))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "status":
        return run_status(args)
    try:
        plans = run_plans(args)
    except UsageError as exc:
        parser.exit(2, f"poolwarden plan: error: {exc}\n")
    result, read = plans.write, plans.read
    if args.output == "json":
        data = result.to_dict()
        if read is not None:  # without standbys the output is the write plan's alone
            data["read"] = read.to_dict()
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(render_table(result))
        if read is not None:
            sys.stdout.write("\n" + render_read_table(read))
    return 0


if __name__ == "__main__":
    sys.exit(main())
