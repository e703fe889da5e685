"""tools/kubepki.py: the kubeconfig and certificate-name logic of the local control plane."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

_PATH = Path(__file__).resolve().parents[2] / "tools" / "kubepki.py"
_spec = importlib.util.spec_from_file_location("poolwarden_tools_kubepki", _PATH)
kubepki = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = kubepki
_spec.loader.exec_module(kubepki)


def test_token_kubeconfig_is_yaml_with_one_cluster_user_and_context():
    text = kubepki.render_kubeconfig(
        "https://127.0.0.1:6443",
        Path("/x/ca.crt"),
        "system:serviceaccount:ns:op",
        token="eyJhbGciOi.J9-_x",
        namespace="ns",
    )
    config = yaml.safe_load(text)
    assert config["current-context"] == "system:serviceaccount:ns:op"
    (cluster,) = config["clusters"]
    assert cluster["cluster"] == {
        "server": "https://127.0.0.1:6443",
        "certificate-authority": "/x/ca.crt",
    }
    (user,) = config["users"]
    assert user["user"] == {"token": "eyJhbGciOi.J9-_x"}
    (context,) = config["contexts"]
    assert context["context"]["namespace"] == "ns"
    assert context["context"]["user"] == user["name"]


def test_certificate_kubeconfig_names_both_files():
    config = yaml.safe_load(
        kubepki.render_kubeconfig(
            "https://127.0.0.1:1",
            Path("/p/ca.crt"),
            "admin",
            cert_file=Path("/p/admin.crt"),
            key_file=Path("/p/admin.key"),
        )
    )
    assert config["users"][0]["user"] == {
        "client-certificate": "/p/admin.crt",
        "client-key": "/p/admin.key",
    }


def test_kubeconfig_needs_exactly_one_kind_of_credential():
    with pytest.raises(ValueError):
        kubepki.render_kubeconfig("https://127.0.0.1:1", Path("/ca"), "u")
    with pytest.raises(ValueError):
        kubepki.render_kubeconfig(
            "https://127.0.0.1:1",
            Path("/ca"),
            "u",
            cert_file=Path("/c"),
            key_file=Path("/k"),
            token="t",
        )


def test_apiserver_certificate_covers_loopback_and_the_in_cluster_names():
    san = kubepki.san_extension(kubepki.SERVER_NAMES, kubepki.SERVER_IPS)
    assert "IP:127.0.0.1" in san.split(",")
    assert "IP:" + kubepki.KUBERNETES_SERVICE_IP in san.split(",")
    assert "DNS:kubernetes.default.svc" in san.split(",")
