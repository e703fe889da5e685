"""The control-plane test tier: a real etcd + kube-apiserver + kube-controller-manager on 127.0.0.1.

Fixture `control_plane` (session scoped) starts one for the whole test session from
`.tools/bin` (`make tools`) and `.tools/trixie-root` (`make trixie-root`) and returns a
`ControlPlane` (tools/controlplane.py) with:

- `.kubeconfig`: Path of an admin kubeconfig (system:masters),
- `.server`: the apiserver's https URL on 127.0.0.1,
- `.service_account_kubeconfig(namespace, name) -> Path`: a kubeconfig with a bound token of
  that ServiceAccount (namespace and ServiceAccount are created if missing), which can do only
  what RBAC grants it.

Every test in this folder carries the `controlplane` marker. When the binaries are missing the
fixture fails (it never skips) and says which make target to run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _load_controlplane_module():
    name = "poolwarden_tools_controlplane"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PROJECT_DIR / "tools" / "controlplane.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


controlplane = _load_controlplane_module()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.controlplane)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    problems = controlplane.missing_binaries()
    if problems:
        pytest.fail(
            "the control-plane tier needs real Kubernetes binaries:\n  " + "\n  ".join(problems),
            pytrace=False,
        )
    cp = controlplane.ControlPlane(tmp_path_factory.mktemp("controlplane"), die_with_parent=True)
    try:
        cp.start()
    except controlplane.ControlPlaneError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield cp
    pids = list(cp.pids.values())
    cp.stop()
    left = [pid for pid in pids if controlplane.pid_alive(pid)]
    assert not left, f"control-plane processes still running after teardown: {left}"
