"""Every Kubernetes API call the operator makes, through the official client.

The client is synchronous; each call runs in a worker thread (``asyncio.to_thread``) so the kopf
event loop never blocks. Objects come back as plain dicts exactly as the API serves them.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from poolwarden_operator import names

JSON = dict[str, Any]
MERGE = "application/merge-patch+json"
PAGE = 250
"""Pods per list request; larger namespaces are read in several pages."""


class Kube:
    """One API client for the whole operator (created in the startup handler)."""

    def __init__(self, api: kubernetes.client.ApiClient, instance: str) -> None:
        self.api = api
        self.core = kubernetes.client.CoreV1Api(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.autoscaling = kubernetes.client.AutoscalingV2Api(api)
        self.instance = instance

    @classmethod
    def connect(cls, instance: str) -> Kube:
        """In-cluster credentials when present, else $KUBECONFIG / ~/.kube/config."""
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        return cls(kubernetes.client.ApiClient(), instance)

    def close(self) -> None:
        self.api.close()

    async def get_budget(self, namespace: str, name: str) -> JSON | None:
        return await _maybe(
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
            found = await asyncio.to_thread(
                self.custom.list_namespaced_custom_object,
                names.GROUP, names.VERSION, namespace, names.PLURAL, **kwargs,
            )  # fmt: skip
            items += found.get("items", [])
            token = (found.get("metadata") or {}).get("continue")
            if not token:
                return items

    async def patch_budget_status(self, namespace: str, name: str, status: JSON) -> None:
        await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object_status,
            names.GROUP, names.VERSION, namespace, names.PLURAL, name, {"status": status},
            _content_type=MERGE,
        )  # fmt: skip

    async def get_deployment(self, namespace: str, name: str) -> JSON | None:
        return await _maybe_raw(self.apps.read_namespaced_deployment, name, namespace)

    async def list_deployments(self, namespace: str, selector: str) -> list[JSON]:
        """Deployments matching ``selector``, read in pages."""
        return await _pages(
            self.apps.list_namespaced_deployment, namespace, label_selector=selector
        )

    async def patch_template_annotations(
        self, namespace: str, name: str, annotations: dict[str, str]
    ) -> None:
        body = {"spec": {"template": {"metadata": {"annotations": annotations}}}}
        await asyncio.to_thread(
            self.apps.patch_namespaced_deployment, name, namespace, body, _content_type=MERGE
        )

    async def get_configmap(self, namespace: str, name: str) -> JSON | None:
        return await _maybe_raw(self.core.read_namespaced_config_map, name, namespace)

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
            await asyncio.to_thread(
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
        await asyncio.to_thread(self.core.create_namespaced_config_map, namespace, body)

    async def list_pods(self, namespace: str, selector: str) -> list[JSON]:
        """Pods matching ``selector``, read in pages of ``PAGE`` (limit/continue)."""
        return await _pages(self.core.list_namespaced_pod, namespace, label_selector=selector)

    async def list_hpas(self, namespace: str) -> list[JSON]:
        """The namespace's autoscaling/v2 HorizontalPodAutoscalers, read in pages."""
        return await _pages(self.autoscaling.list_namespaced_horizontal_pod_autoscaler, namespace)

    async def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        try:
            await asyncio.to_thread(
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
        await asyncio.to_thread(self.core.create_namespaced_event, meta["namespace"], body)


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


async def _pages(call: Any, namespace: str, **kwargs: Any) -> list[JSON]:
    """Every item of a namespaced list call, read in pages of ``PAGE`` (limit/continue)."""
    items: list[JSON] = []
    token = None
    while True:
        extra: dict[str, Any] = {"limit": PAGE, **kwargs}
        if token:
            extra["_continue"] = token
        response = await asyncio.to_thread(call, namespace, _preload_content=False, **extra)
        page = json.loads(response.data)
        items += page.get("items", [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items


async def _maybe(call: Any, *args: Any) -> JSON | None:
    try:
        return await asyncio.to_thread(call, *args)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


async def _maybe_raw(call: Any, *args: Any) -> JSON | None:
    try:
        response = await asyncio.to_thread(call, *args, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return json.loads(response.data)
