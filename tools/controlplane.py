#!/usr/bin/env python3
"""A real local Kubernetes control plane on 127.0.0.1: etcd, apiserver, controller-manager.

This module owns starting and stopping those three processes in one directory: fresh
certificates (tools/kubepki.py), free ports, an admin kubeconfig, service-account kubeconfigs
(TokenRequest) and a teardown that leaves no process behind. The pytest fixture
`control_plane` (tests/controlplane/conftest.py) and humans use it:

    tools/controlplane.py up DIR     # prints the kubeconfig path; state in DIR
    tools/controlplane.py down DIR

Binaries: kube-apiserver and kube-controller-manager from `.tools/bin` (`make tools`); etcd
from Debian trixie's etcd-server in `.tools/trixie-root` (`make trixie-root`), started with
that root's own dynamic loader and libraries, so no chroot and no root privileges are needed.
Python standard library only.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kubepki  # noqa: E402

PROJECT_DIR = Path(__file__).resolve().parent.parent
TOOLS_BIN = Path(os.environ.get("TOOLS_BIN", PROJECT_DIR / ".tools" / "bin"))
TRIXIE_ROOT = Path(os.environ.get("TRIXIE_ROOT", PROJECT_DIR / ".tools" / "trixie-root"))
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
STATE_FILE = "controlplane.json"
START_TIMEOUT = float(os.environ.get("CONTROLPLANE_START_TIMEOUT", "120"))


class ControlPlaneError(RuntimeError):
    """The control plane could not start, or a request to it failed."""


def say(line: str) -> None:
    """Progress for humans and CI logs, flushed at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_binaries(tools_bin: Path = TOOLS_BIN, trixie_root: Path = TRIXIE_ROOT) -> list[str]:
    """Human-readable list of what is missing to start a control plane, with the fix."""
    missing = []
    for name in ("kube-apiserver", "kube-controller-manager"):
        if not os.access(tools_bin / name, os.X_OK):
            missing.append(f"{tools_bin / name} is missing: run `make tools`")
    if not os.access(trixie_root / "usr/bin/etcd", os.X_OK):
        missing.append(f"{trixie_root}/usr/bin/etcd is missing: run `make trixie-root`")
    if not os.access("/usr/bin/openssl", os.X_OK) and not any(
        os.access(Path(p) / "openssl", os.X_OK) for p in os.environ.get("PATH", "").split(":")
    ):
        missing.append("openssl is missing: apt-get install openssl")
    return missing


def etcd_command(trixie_root: Path) -> list[str]:
    """Run trixie's etcd with trixie's loader and libraries (works on any glibc host)."""
    loader = trixie_root / "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    libs = trixie_root / "usr/lib/x86_64-linux-gnu"
    return [str(loader), "--library-path", str(libs), str(trixie_root / "usr/bin/etcd")]


@dataclass
class ControlPlane:
    """One control plane living in `root`; `start()` brings it up, `stop()` tears it down."""

    root: Path
    tools_bin: Path = TOOLS_BIN
    trixie_root: Path = TRIXIE_ROOT
    # True for test fixtures: the processes get SIGTERM when the Python process that started
    # them dies without a teardown (killed by a timeout, say). False for `up`, which outlives us.
    die_with_parent: bool = False
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    # ----- paths and URLs -------------------------------------------------------------

    @property
    def pki(self) -> kubepki.Pki:
        return kubepki.Pki(self.root / "pki")

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    # ----- lifecycle ------------------------------------------------------------------

    def start(self) -> ControlPlane:
        problems = missing_binaries(self.tools_bin, self.trixie_root)
        if problems:
            raise ControlPlaneError("cannot start the control plane:\n  " + "\n  ".join(problems))
        self.root = self.root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        if (self.root / STATE_FILE).exists():
            raise ControlPlaneError(
                f"{self.root} already holds a control plane: "
                f"run `tools/controlplane.py down {self.root}`"
            )
        self.logs.mkdir(exist_ok=True)
        started = time.monotonic()
        say(f">> certificates and keys in {self.root / 'pki'} (openssl)")
        kubepki.create(self.root / "pki")
        self.ports = {
            name: free_port() for name in ("etcd", "etcd-peer", "apiserver", "controller-manager")
        }
        self._write_kubeconfigs()
        try:
            self._start_etcd()
            self._start_apiserver()
            self._wait_ready()
            self._start_controller_manager()
            self._wait_controller_manager()
        except BaseException:
            self.stop()
            raise
        say(
            f">> control plane ready at {self.server} in {time.monotonic() - started:.1f}s; "
            f"kubeconfig {self.kubeconfig}"
        )
        return self

    def stop(self) -> None:
        """Stop every process (controller-manager, apiserver, etcd), SIGTERM then SIGKILL."""
        for name in ("controller-manager", "apiserver", "etcd"):
            pid = self.pids.get(name)
            if pid is None:
                continue
            proc = self._procs.get(name)
            if proc is None and not self._is_ours(pid):
                continue  # already gone, or the pid now belongs to something else
            say(f">> stopping {name} (pid {pid})")
            _terminate(pid, proc)
        self.pids.clear()
        self._procs.clear()
        (self.root / STATE_FILE).unlink(missing_ok=True)

    def running_pids(self) -> list[int]:
        """The pids of this control plane's processes that are still alive."""
        return [pid for pid in self.pids.values() if pid_alive(pid)]

    # ----- state file, for `up`/`down` in different processes ------------------------

    def save(self) -> None:
        state = {"ports": self.ports, "pids": self.pids, "server": self.server}
        (self.root / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, root: Path) -> ControlPlane:
        root = root.resolve()
        state = json.loads((root / STATE_FILE).read_text())
        return cls(
            root=root, ports=state["ports"], pids={k: int(v) for k, v in state["pids"].items()}
        )

    def _is_ours(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return str(self.root).encode() in cmdline

    # ----- processes ------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - owned by the child
        say(f">> starting {name}: {Path(argv[0]).name if name != 'etcd' else 'etcd (trixie)'}")
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.root,
            preexec_fn=_terminate_with_parent if self.die_with_parent else None,
        )
        log.close()
        self._procs[name] = proc
        self.pids[name] = proc.pid

    def _check_alive(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
            raise ControlPlaneError(
                f"{name} exited with {proc.returncode}; end of its log:\n{tail}"
            )

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        self._spawn(
            "etcd",
            [
                *etcd_command(self.trixie_root),
                "--name=poolwarden",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=poolwarden={peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # throw-away test data: no fsync, faster on shared disks
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self) -> None:
        pki = self.pki
        self._spawn(
            "apiserver",
            [
                str(self.tools_bin / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--tls-cert-file={pki.apiserver_crt}",
                f"--tls-private-key-file={pki.apiserver_key}",
                f"--client-ca-file={pki.ca_crt}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={kubepki.SERVICE_CLUSTER_IP_RANGE}",
                # 127.0.0.1 is not a valid endpoint for the `kubernetes` Service; nothing in-cluster
                # needs to reach this apiserver through it.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                f"--cert-dir={self.root / 'pki'}",
                "--v=1",
            ],
        )

    def _start_controller_manager(self) -> None:
        pki = self.pki
        kubeconfig = self.root / "controller-manager.kubeconfig"
        self._spawn(
            "controller-manager",
            [
                str(self.tools_bin / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['controller-manager']}",
                f"--cert-dir={self.root / 'pki' / 'controller-manager'}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_crt}",
                f"--cluster-signing-cert-file={pki.ca_crt}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={kubepki.SERVICE_CLUSTER_IP_RANGE}",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _write_kubeconfigs(self) -> None:
        pki = self.pki
        for name, path in (
            ("admin", self.kubeconfig),
            ("controller-manager", self.root / "controller-manager.kubeconfig"),
        ):
            path.write_text(
                kubepki.render_kubeconfig(
                    self.server,
                    pki.ca_crt,
                    name,
                    cert_file=pki.client_crt(name),
                    key_file=pki.client_key(name),
                )
            )
            path.chmod(0o600)

    # ----- readiness ------------------------------------------------------------------

    def _wait(self, what: str, names: tuple[str, ...], probe) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            for name in names:
                self._check_alive(name)
            try:
                if probe():
                    return
            except (OSError, urllib.error.URLError, ControlPlaneError) as exc:
                last = str(exc)
            time.sleep(0.25)
        raise ControlPlaneError(
            f"{what} not ready after {START_TIMEOUT:.0f}s (last error: {last}); logs in {self.logs}"
        )

    def _wait_ready(self) -> None:
        say(">> waiting for the apiserver's /readyz")

        def probe() -> bool:
            status, body = self.request("GET", "/readyz")
            return status == 200 and body.strip() == b"ok"

        self._wait("kube-apiserver /readyz", ("etcd", "apiserver"), probe)

    def _wait_controller_manager(self) -> None:
        say(">> waiting for the controller-manager (the `default` ServiceAccount appears)")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = (
            ssl.CERT_NONE
        )  # its serving certificate is self-signed, generated at start
        url = f"https://127.0.0.1:{self.ports['controller-manager']}/healthz"

        def probe() -> bool:
            with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
                if resp.status != 200:
                    return False
            status, _ = self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return status == 200

        self._wait("kube-controller-manager", ("etcd", "apiserver", "controller-manager"), probe)

    # ----- API access (admin) ---------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        ctx.load_cert_chain(str(self.pki.client_crt("admin")), str(self.pki.client_key("admin")))
        return ctx

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        """One admin request to the apiserver; returns (status, body) for any HTTP status."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self._ssl_context(), timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()

    def _ensure(self, path: str, body: dict) -> None:
        status, out = self.request("POST", path, body)
        if status not in (200, 201, 409):
            raise ControlPlaneError(f"POST {path} -> {status}: {out[:500]!r}")

    def service_account_kubeconfig(
        self, namespace: str, name: str, expiration_seconds: int = 86400
    ) -> Path:
        """A kubeconfig authenticating as ServiceAccount `namespace/name` (created if missing)
        with a bound token from the TokenRequest API. It has only the RBAC that SA is granted."""
        self._ensure(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        self._ensure(
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        )
        status, out = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )
        if status != 201:
            raise ControlPlaneError(
                f"TokenRequest for {namespace}/{name} -> {status}: {out[:500]!r}"
            )
        token = json.loads(out)["status"]["token"]
        path = self.root / "serviceaccounts" / f"{namespace}.{name}.kubeconfig"
        path.parent.mkdir(exist_ok=True)
        path.write_text(
            kubepki.render_kubeconfig(
                self.server,
                self.pki.ca_crt,
                f"system:serviceaccount:{namespace}:{name}",
                token=token,
                namespace=namespace,
            )
        )
        path.chmod(0o600)
        return path


_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before any fork


def _terminate_with_parent() -> None:
    """In the child before exec: ask the kernel for SIGTERM when the parent thread dies."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just not reaped yet


def _terminate(pid: int, proc: subprocess.Popen | None, grace: float = 15.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after `grace` seconds, reap."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    return
            elif not pid_alive(pid):
                return
            time.sleep(0.1)
    if proc is not None:
        proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("dir", type=Path, help="directory for certificates, data, logs and state")
    args = parser.parse_args(argv)
    root = args.dir.resolve()
    try:
        if args.action == "up":
            cp = ControlPlane(root).start()
            cp.save()
            say(f"export KUBECONFIG={cp.kubeconfig}")
        else:
            if not (root / STATE_FILE).exists():
                say(f">> no control plane in {root}")
                return 0
            cp = ControlPlane.load(root)
            pids = list(cp.pids.values())
            cp.stop()
            left = [pid for pid in pids if pid_alive(pid)]
            if left:
                sys.stderr.write(f"error: processes still running: {left}\n")
                return 1
            say(f">> control plane in {root} stopped")
    except ControlPlaneError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
