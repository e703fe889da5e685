"""`pip install poolwarden` as a user gets it: a wheel built from the tree (the files git
knows, as a fresh clone has them) installed into a fresh venv.

The core alone brings no third-party package and its CLI plans; with the extras every module
of the library imports, and so does the README's FastAPI snippet, exactly as documented; no
top-level package but `poolwarden` is installed (no `app`, no reference app, no operator).
The extras' dependencies come from PyPI through the pip cache, at constraints.txt's versions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import readme

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "constraints.txt"
EXTRAS = "async,sync,fastapi,flask,metrics,status"
NOT_OURS = ("app", "poolwarden_fastapi_app", "poolwarden_flask_app", "poolwarden_operator")


def run(*cmd: str | Path, cwd: Path, check: bool = True, timeout: float = 300,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} exited {out.returncode}:\n{out.stdout[-3000:]}\n"
                             f"{out.stderr[-3000:]}")
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tree: tracked and new files, as git sees them (a fresh clone's)."""
    tree = tmp_path_factory.mktemp("tree")
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                 cwd=REPO).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a file deleted in the work tree is not in a fresh clone
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    return tree


def build_wheel(project: Path, dist: Path) -> Path:
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", dist,
        project, cwd=project)
    (built,) = dist.glob("*.whl")
    return built


def top_level(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as whl:
        return {name.split("/", 1)[0] for name in whl.namelist()
                if not name.split("/", 1)[0].endswith(".dist-info")}


@pytest.fixture(scope="module")
def wheel(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tree, tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--clear", path, cwd=path)
    return path


def python_in(venv: Path, code: str, *, cwd: Path, check: bool = True,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run(venv / "bin" / "python", "-I", "-c", code, cwd=cwd, check=check, env=env)


def test_the_wheel_holds_only_the_poolwarden_package(wheel):
    with zipfile.ZipFile(wheel) as whl:
        metadata = whl.read(next(n for n in whl.namelist()
                                 if n.endswith(".dist-info/METADATA"))).decode()
    assert top_level(wheel) == {"poolwarden"}
    extras = {line.split(":", 1)[1].strip() for line in metadata.splitlines()
              if line.startswith("Provides-Extra:")}
    assert {"async", "sync", "fastapi", "flask", "metrics", "status"} <= extras, extras
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert all("extra ==" in line for line in requires), requires  # the core needs nothing


def test_fresh_venv_core_then_every_integration(wheel, venv, tmp_path):
    pip = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]

    # The core: no dependency at all, and the CLI plans.
    run(*pip, "install", "--quiet", wheel, cwd=tmp_path)
    installed = {p["name"].lower() for p in json.loads(
        run(*pip, "list", "--format", "json", cwd=tmp_path).stdout)}
    assert installed - {"pip", "setuptools"} == {"poolwarden"}, installed
    plan = run(venv / "bin" / "poolwarden", "plan", "--max-connections", "100", "--reserved",
               "10", "--pgbouncer-replicas", "1", "--consumer", "web:replicas=2,workers=2",
               cwd=tmp_path)
    assert "budget 90" in plan.stdout, plan.stdout
    status = run(venv / "bin" / "poolwarden", "status", cwd=tmp_path, check=False)
    assert status.returncode == 2, status  # no Kubernetes client: says which extra
    assert "pip install 'poolwarden[status]'" in status.stderr, status.stderr
    for module, extra in (("aio", "async"), ("fastapi", "fastapi"), ("metrics", "metrics"),
                          ("threaded", "sync"), ("flask", "flask"), ("gunicorn", "sync"),
                          ("kube", "status")):
        without = python_in(venv, f"import poolwarden.{module}", cwd=tmp_path, check=False)
        assert without.returncode != 0, without  # says which extra it needs
        assert f"pip install 'poolwarden[{extra}]'" in without.stderr, without.stderr

    # Every extra (the README's `pip install 'poolwarden[fastapi]'` among them).
    assert readme.install_command() == "pip install 'poolwarden[fastapi]'"
    run(*pip, "install", "--quiet", "-c", CONSTRAINTS, f"poolwarden[{EXTRAS}] @ {wheel.as_uri()}",
        cwd=tmp_path)
    with zipfile.ZipFile(wheel) as whl:
        modules = sorted(name.removesuffix(".py").replace("/", ".") for name in whl.namelist()
                         if name.startswith("poolwarden/") and name.endswith(".py")
                         and not name.endswith("__init__.py"))
    assert {"poolwarden.aio", "poolwarden.fastapi", "poolwarden.metrics", "poolwarden.threaded",
            "poolwarden.flask", "poolwarden.gunicorn", "poolwarden.kube"} <= set(modules)
    (tmp_path / "snippet.py").write_text(readme.fastapi_snippet())
    report = python_in(venv, f"""
import importlib, importlib.util, json, sys
sys.path.insert(0, {str(tmp_path)!r})
for name in {modules!r}:
    importlib.import_module(name)
snippet = importlib.import_module("snippet")
print(json.dumps({{
    "not_ours": [n for n in {list(NOT_OURS)!r} if importlib.util.find_spec(n) is not None],
    "routes": sorted(getattr(r, "path", "") for r in snippet.app.routes),
    "poolwarden": importlib.import_module("poolwarden").__file__,
}}))
""", cwd=tmp_path, env={**os.environ, "DATABASE_URL": "postgresql+asyncpg://u:p@127.0.0.1:1/db"})
    found = json.loads(report.stdout)
    assert found["not_ours"] == [], found
    assert "/now" in found["routes"], found
    assert Path(found["poolwarden"]).is_relative_to(venv), found  # the wheel, not the tree


@pytest.mark.parametrize(("project", "package", "requires"), [
    ("app", "poolwarden_fastapi_app", "poolwarden[fastapi,metrics]==0.1.0"),
    ("flask-app", "poolwarden_flask_app", "poolwarden[flask,metrics]==0.1.0"),
    ("operator", "poolwarden_operator", "poolwarden==0.1.0"),
])
def test_the_apps_and_the_operator_are_distributions_of_their_own(tree, tmp_path, project,
                                                                 package, requires):
    built = build_wheel(tree / project, tmp_path)
    assert top_level(built) == {package}
    with zipfile.ZipFile(built) as whl:
        metadata = whl.read(next(n for n in whl.namelist()
                                 if n.endswith(".dist-info/METADATA"))).decode()
    assert f"Requires-Dist: {requires}" in metadata, metadata
