"""Certificates, keys and kubeconfigs for the local control plane, made with the openssl CLI.

This module owns the PKI layout of a control-plane directory (one CA, the apiserver's serving
certificate, client certificates for the admin and the controller-manager, the
service-account signing key pair) and renders kubeconfig files. It needs only Python's
standard library and the `openssl` command.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# The first address of the service range: the ClusterIP of the `kubernetes` Service, which
# in-cluster clients (and the apiserver's own certificate) use.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
SERVER_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVER_IPS = ("127.0.0.1", KUBERNETES_SERVICE_IP)


@dataclass(frozen=True)
class Pki:
    """Paths of every credential in a control-plane directory's `pki/` folder."""

    root: Path

    @property
    def ca_crt(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def apiserver_crt(self) -> Path:
        return self.root / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.root / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.root / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.root / "sa.pub"

    def client_crt(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def client_key(self, name: str) -> Path:
        return self.root / f"{name}.key"


# Client identities: file name -> (CN, O). system:masters is the superuser group; the
# controller-manager's CN is the user the bootstrap RBAC policy grants its role to.
CLIENTS = {
    "admin": ("poolwarden-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", None),
}


def _openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise RuntimeError(
            "the openssl command is needed to make certificates: apt-get install openssl"
        )
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _subject(cn: str, org: str | None) -> str:
    return f"/CN={cn}" + (f"/O={org}" if org else "")


def san_extension(names: tuple[str, ...], ips: tuple[str, ...]) -> str:
    """The subjectAltName value of the apiserver certificate."""
    return ",".join([f"DNS:{n}" for n in names] + [f"IP:{i}" for i in ips])


def _sign(pki: Pki, key: Path, crt: Path, subject: str, extensions: list[str]) -> None:
    csr = crt.with_suffix(".csr")
    ext = crt.with_suffix(".ext")
    _openssl("genrsa", "-out", str(key), "2048")
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    ext.write_text("\n".join(extensions) + "\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(pki.ca_crt),
        "-CAkey",
        str(pki.ca_key),
        "-CAcreateserial",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        str(ext),
        "-out",
        str(crt),
    )
    csr.unlink()
    ext.unlink()


def create(root: Path) -> Pki:
    """Generate a fresh CA, serving and client certificates and the service-account keys."""
    pki = Pki(root)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    _openssl("genrsa", "-out", str(pki.ca_key), "2048")
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        str(pki.ca_key),
        "-subj",
        "/CN=poolwarden-local-ca",
        "-days",
        "30",
        "-sha256",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out",
        str(pki.ca_crt),
    )
    _sign(
        pki,
        pki.apiserver_key,
        pki.apiserver_crt,
        "/CN=kube-apiserver",
        [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth",
            "subjectAltName=" + san_extension(SERVER_NAMES, SERVER_IPS),
        ],
    )
    for name, (cn, org) in CLIENTS.items():
        _sign(
            pki,
            pki.client_key(name),
            pki.client_crt(name),
            _subject(cn, org),
            [
                "basicConstraints=critical,CA:FALSE",
                "keyUsage=critical,digitalSignature,keyEncipherment",
                "extendedKeyUsage=clientAuth",
            ],
        )
    _openssl("genrsa", "-out", str(pki.sa_key), "2048")
    _openssl("rsa", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub))
    return pki


def render_kubeconfig(
    server: str,
    ca_file: Path,
    user: str,
    *,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    token: str | None = None,
    namespace: str = "default",
) -> str:
    """A kubeconfig (YAML) with one cluster, one user (client certificate or token), one context."""
    if (cert_file is None) == (token is None):
        raise ValueError("give either cert_file and key_file, or token")
    q = json.dumps  # a JSON string is a valid double-quoted YAML scalar
    if token is not None:
        credentials = [f"    token: {q(token)}"]
    else:
        credentials = [
            f"    client-certificate: {q(str(cert_file))}",
            f"    client-key: {q(str(key_file))}",
        ]
    lines = [
        "apiVersion: v1",
        "kind: Config",
        "clusters:",
        "- name: poolwarden-local",
        "  cluster:",
        f"    server: {q(server)}",
        f"    certificate-authority: {q(str(ca_file))}",
        "users:",
        f"- name: {q(user)}",
        "  user:",
        *credentials,
        "contexts:",
        f"- name: {q(user)}",
        "  context:",
        "    cluster: poolwarden-local",
        f"    user: {q(user)}",
        f"    namespace: {q(namespace)}",
        f"current-context: {q(user)}",
        "preferences: {}",
    ]
    return "\n".join(lines) + "\n"
