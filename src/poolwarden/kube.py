"""I/O: read ConnectionBudgets and the ConfigMaps they wrote, with the official Kubernetes client.

`connect` loads credentials (``--kubeconfig``/``$KUBECONFIG``/``~/.kube/config`` and its
context, else the pod's ServiceAccount), `budgets` reads one budget or every budget of a
namespace, `configmaps` the plan and sizing files the budget's status names. Every failure is a
`ReadError` whose message says what went wrong and what to change (no such budget, the CRD not
installed, RBAC, credentials, an unreachable server). Only reads: ``get``/``list`` on
``connectionbudgets.poolwarden.io`` and ``get`` on ``configmaps``.

Needs the ``status`` extra: ``pip install 'poolwarden[status]'``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

try:
    import kubernetes
    import urllib3
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
except ImportError as error:  # pragma: no cover (the packaging tier checks the message)
    raise ImportError(f"poolwarden.kube needs the status extra: "
                      f"pip install 'poolwarden[status]' ({error})") from error

from poolwarden import ledgerview

GROUP = "poolwarden.io"
VERSION = "v1alpha1"
PLURAL = "connectionbudgets"
RESOURCE = f"{PLURAL}.{GROUP}"
"""The CRD (charts/poolwarden/crds/); a unit test checks these against it."""
TIMEOUT = 10.0
"""Seconds for each API request (connect and read)."""
LISTED_BUDGETS = 50
"""Budgets read from one namespace at most."""
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
NEEDED = (
    f"get and list on {RESOURCE} and get on configmaps (e.g. kubectl -n {{ns}} create role "
    f"poolwarden-status --verb=get,list --resource={RESOURCE},configmaps, then a RoleBinding "
    "to you)"
)


class ReadError(Exception):
    """The cluster could not be read; the message says what to change."""


@dataclasses.dataclass
class Cluster:
    api: Any  # kubernetes.client.ApiClient
    namespace: str
    """The namespace of the kubeconfig's context (or the pod's), for ``-n`` not given."""
    server: str
    where: str
    """Where the credentials came from, for messages."""


def connect(kubeconfig: str | None = None, context: str | None = None) -> Cluster:
    """An API client from the kubeconfig (or in a pod, its ServiceAccount)."""
    env = os.environ.get("KUBECONFIG")
    default = Path("~/.kube/config").expanduser()
    in_pod = (
        not kubeconfig and not env and not default.exists()
        and "KUBERNETES_SERVICE_HOST" in os.environ
    )  # fmt: skip
    if in_pod:
        configuration = _configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise ReadError(f"no kubeconfig and no usable ServiceAccount in this pod: {exc}; "
                            "pass --kubeconfig PATH") from None  # fmt: skip
        namespace_file = SERVICE_ACCOUNT / "namespace"
        namespace = namespace_file.read_text().strip() if namespace_file.exists() else "default"
        api = kubernetes.client.ApiClient(configuration)
        return Cluster(api, namespace, configuration.host, "the pod's ServiceAccount")
    path = kubeconfig or None  # None: $KUBECONFIG (may list several files), else ~/.kube/config
    where = kubeconfig or env or str(default)
    try:
        contexts, active = kubernetes.config.list_kube_config_contexts(config_file=path)
        chosen = active
        if context is not None:
            chosen = next((c for c in contexts or [] if c.get("name") == context), None)
            if chosen is None:
                names = ", ".join(sorted(c.get("name", "") for c in contexts or []))
                raise ReadError(f"kubeconfig {where} has no context {context!r} (it has: "
                                f"{names or 'none'}); pass one of them to --context")  # fmt: skip
        api = kubernetes.config.new_client_from_config(
            config_file=path, context=context, persist_config=False,
            client_configuration=_configuration(),
        )
    except (ConfigException, OSError) as exc:
        raise ReadError(f"cannot load the kubeconfig {where}: {exc}; pass --kubeconfig PATH "
                        "(or set KUBECONFIG) to a kubeconfig that names the cluster") from None
    namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
    return Cluster(api, namespace, api.configuration.host, f"kubeconfig {where}")


def _configuration() -> Any:
    configuration = kubernetes.client.Configuration()
    configuration.retries = 1  # an unreachable server fails in seconds, not after 3 retries
    return configuration


def budgets(cluster: Cluster, namespace: str, name: str | None = None) -> list[dict[str, Any]]:
    """The named budget, or every budget of the namespace sorted by name (at most
    `LISTED_BUDGETS`); ReadError when there is none."""
    custom = kubernetes.client.CustomObjectsApi(cluster.api)
    try:
        if name is not None:
            return [custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=TIMEOUT
            )]  # fmt: skip
        answer = custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, limit=LISTED_BUDGETS, _request_timeout=TIMEOUT
        )
    except ApiException as exc:
        raise ReadError(_explain(exc, cluster, namespace, name)) from None
    except urllib3.exceptions.HTTPError as exc:
        raise ReadError(_unreachable(cluster, exc)) from None
    items = sorted(answer.get("items") or [], key=lambda b: b["metadata"]["name"])
    if not items:
        raise ReadError(f"no ConnectionBudget in namespace {namespace} (at {cluster.server}); "
                        "pass the namespace of the release with -n NAMESPACE")  # fmt: skip
    return items


def configmaps(cluster: Cluster, budget: dict[str, Any]) -> ledgerview.Files:
    """The plan and sizing files the budget's status names: ref -> data, or why not readable
    (the ledger then says so; a budget without them is still shown)."""
    core = kubernetes.client.CoreV1Api(cluster.api)
    found: ledgerview.Files = {}
    for ref, namespace, name in ledgerview.file_refs(budget):
        try:
            configmap = core.read_namespaced_config_map(name, namespace, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                found[ref] = "not found (the operator recreates it at its next pass)"
            elif exc.status == 403:
                found[ref] = f"forbidden: grant get on configmaps in namespace {namespace}"
            else:
                found[ref] = f"{exc.status} {exc.reason}"
            continue
        except urllib3.exceptions.HTTPError as exc:
            raise ReadError(_unreachable(cluster, exc)) from None
        found[ref] = dict(configmap.data or {})
    return found


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def _explain(exc: ApiException, cluster: Cluster, namespace: str, name: str | None) -> str:
    what = f"ConnectionBudget {name}" if name else "ConnectionBudgets"
    if exc.status == 404:
        try:
            body = json.loads(exc.body or "")
        except ValueError:
            body = None
        if name and isinstance(body, dict) and body.get("details"):
            return (f"no ConnectionBudget {name} in namespace {namespace}: `poolwarden status "
                    f"-n {namespace}` (no name) lists the budgets there, or pass -n NAMESPACE")
        return (f"the API server at {cluster.server} does not serve {RESOURCE}: the "
                "ConnectionBudget CRD is not installed (helm install the poolwarden chart, or "
                "kubectl apply -f charts/poolwarden/crds/)")
    if exc.status == 403:
        return (f"not allowed to read {what} in namespace {namespace}: {_message(exc)}. "
                f"Ask for {NEEDED.format(ns=namespace)}")
    if exc.status == 401:
        return (f"the API server at {cluster.server} refused the credentials of {cluster.where} "
                "(401 Unauthorized): refresh them (a new token or certificate) or pass "
                "--kubeconfig / --context for another")
    return f"reading {what} in namespace {namespace} failed: {exc.status} {_message(exc)}"


def _unreachable(cluster: Cluster, exc: Exception) -> str:
    return (f"cannot reach the API server at {cluster.server} ({type(exc).__name__}: "
            f"{ledgerview.cut(exc, 200)}); check that the cluster of {cluster.where} is up, or "
            "pass --kubeconfig / --context for another")
