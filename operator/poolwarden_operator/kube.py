"""Every Kubernetes API call the operator makes, through the official client.

The client is synchronous; each call runs in a thread of the client's own pool (``CONCURRENCY``
threads, as many urllib3 connections) so the kopf event loop never blocks and a pass's requests
do not queue behind the default executor's few threads. Objects come back as plain dicts
exactly as the API serves them; writes whose answer is not needed are not decoded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from poolwarden_operator import names

JSON = dict[str, Any]
MERGE = "application/merge-patch+json"
PAGE = 250
"""Pods per list request; larger namespaces are read in several pages."""
CONCURRENCY = 32
"""API requests in flight at once: the client's threads and its urllib3 connection pool."""
ANNOTATING = CONCURRENCY - 8
"""Pod annotations in flight at once; the other threads stay free for the pass's other calls."""


class Kube:
    """One API client for the whole operator (created in the startup handler)."""

    def __init__(self, api: kubernetes.client.ApiClient, instance: str) -> None:
        self.api = api
        self.pool = concurrent.futures.ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="kube")
        self._annotating: asyncio.Semaphore | None = None
        self.core = kubernetes.client.CoreV1Api(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.autoscaling = kubernetes.client.AutoscalingV2Api(api)
        self.instance = instance

    @classmethod
    def connect(cls, instance: str) -> Kube:
        """In-cluster credentials when present, else $KUBECONFIG / ~/.kube/config."""
        configuration = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = CONCURRENCY
        return cls(kubernetes.client.ApiClient(configuration), instance)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.api.close()

    async def _call(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)`` in the client's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(call, *args, **kwargs))

    async def _write(self, call: Any, *args: Any, **kwargs: Any) -> None:
        """A write whose answer is not needed: read and released, never decoded into models."""
        response = await self._call(call, *args, _preload_content=False, **kwargs)
        response.data  # noqa: B018 - read to the end, so the connection goes back to the pool
        response.release_conn()

    async def get_budget(self, namespace: str, name: str) -> JSON | None:
        return await self._maybe(
            self.custom.get_namespaced_custom_object,
            names.GROUP, names.VERSION, namespace, names.PLURAL, name,
        )  # fmt: skip

    async def list_budgets(self, namespace: str) -> list[JSON]:
        items: list[JSON] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"limit": PAGE}
            if token:
                kwargs["_continue"] = token
            found = await self._call(
                self.custom.list_namespaced_custom_object,
                names.GROUP, names.VERSION, namespace, names.PLURAL, **kwargs,
            )  # fmt: skip
            items += found.get("items", [])
            token = (found.get("metadata") or {}).get("continue")
            if not token:
                return items

    async def patch_budget_status(self, namespace: str, name: str, status: JSON) -> None:
        await self._write(
            self.custom.patch_namespaced_custom_object_status,
            names.GROUP, names.VERSION, namespace, names.PLURAL, name, {"status": status},
            _content_type=MERGE,
        )  # fmt: skip

    async def get_deployment(self, namespace: str, name: str) -> JSON | None:
        return await self._maybe_raw(self.apps.read_namespaced_deployment, name, namespace)

    async def list_deployments(self, namespace: str, selector: str) -> list[JSON]:
        """Deployments matching ``selector``, read in pages."""
        return await self._pages(
            self.apps.list_namespaced_deployment, namespace, label_selector=selector
        )

    async def patch_template_annotations(
        self, namespace: str, name: str, annotations: dict[str, str]
    ) -> None:
        body = {"spec": {"template": {"metadata": {"annotations": annotations}}}}
        await self._write(
            self.apps.patch_namespaced_deployment, name, namespace, body, _content_type=MERGE
        )

    async def get_configmap(self, namespace: str, name: str) -> JSON | None:
        return await self._maybe_raw(self.core.read_namespaced_config_map, name, namespace)

    async def write_configmap(
        self,
        namespace: str,
        name: str,
        data: dict[str, str],
        labels: dict[str, str],
        owner: JSON,
        exists: bool,
    ) -> None:
        """Create the ConfigMap owned by the budget, or patch only its data if it exists."""
        if exists:
            await self._write(
                self.core.patch_namespaced_config_map,
                name,
                namespace,
                {"data": data},
                _content_type=MERGE,
            )
            return
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "ownerReferences": [owner],
            },
            "data": data,
        }
        await self._write(self.core.create_namespaced_config_map, namespace, body)

    async def list_pods(self, namespace: str, selector: str) -> list[JSON]:
        """Pods matching ``selector``, read in pages of ``PAGE`` (limit/continue)."""
        return await self._pages(self.core.list_namespaced_pod, namespace, label_selector=selector)

    async def pod_pages(self, namespace: str, selector: str) -> AsyncIterator[list[JSON]]:
        """``list_pods`` a page at a time, so a caller can act on one while the next is read."""
        async for page in self._paged(
            self.core.list_namespaced_pod, namespace, label_selector=selector
        ):
            yield page

    async def list_hpas(self, namespace: str) -> list[JSON]:
        """The namespace's autoscaling/v2 HorizontalPodAutoscalers, read in pages."""
        return await self._pages(
            self.autoscaling.list_namespaced_horizontal_pod_autoscaler, namespace
        )

    async def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """At most ``ANNOTATING`` at once (the semaphore is made on the running loop)."""
        if self._annotating is None:
            self._annotating = asyncio.Semaphore(ANNOTATING)
        async with self._annotating:
            try:
                await self._write(
                    self.core.patch_namespaced_pod,
                    name,
                    namespace,
                    {"metadata": {"annotations": annotations}},
                    _content_type=MERGE,
                )
            except ApiException as exc:
                if exc.status != 404:  # a pod that went away needs no refresh
                    raise

    async def post_event(self, budget: JSON, kind: str, reason: str, message: str) -> None:
        meta = budget["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": names.event_name_prefix(meta["name"]),
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": names.COMPONENT},
            "reportingComponent": names.COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._write(self.core.create_namespaced_event, meta["namespace"], body)

    async def _pages(self, call: Any, namespace: str, **kwargs: Any) -> list[JSON]:
        """Every item of a namespaced list call, read in pages of ``PAGE`` (limit/continue)."""
        return [item async for page in self._paged(call, namespace, **kwargs) for item in page]

    async def _paged(self, call: Any, namespace: str, **kwargs: Any) -> AsyncIterator[list[JSON]]:
        token = None
        while True:
            extra: dict[str, Any] = {"limit": PAGE, **kwargs}
            if token:
                extra["_continue"] = token
            response = await self._call(call, namespace, _preload_content=False, **extra)
            page = json.loads(response.data)
            yield page.get("items", [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    async def _maybe(self, call: Any, *args: Any) -> JSON | None:
        try:
            return await self._call(call, *args)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def _maybe_raw(self, call: Any, *args: Any) -> JSON | None:
        try:
            response = await self._call(call, *args, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(response.data)


def owner_reference(budget: JSON) -> JSON:
    meta = budget["metadata"]
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
    }


def label_selector(deployment: JSON) -> str:
    """A Deployment's spec.selector as a label-selector string."""
    selector = deployment.get("spec", {}).get("selector") or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)
