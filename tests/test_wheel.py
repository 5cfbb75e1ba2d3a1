"""loraops as a user installs it: a wheel in a fresh venv, run from a folder with no checkout around it.

The venv borrows the test environment's third-party packages through a .pth line (a download of torch and
friends would take minutes and prove nothing about loraops); loraops itself comes only from the wheel.
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO, write_jsonl


def _run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the loraops wheel built from this checkout; its bin/ folder."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: building in the checkout would leave build/ there, and reuse it
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, source / name)
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        root / "dist",
        source,
        cwd=root,
    )
    (wheel,) = (root / "dist").glob("loraops-*.whl")
    _run(sys.executable, "-m", "venv", "--without-pip", root / "venv", cwd=root)
    (purelib,) = (root / "venv" / "lib").glob("python3*/site-packages")
    (purelib / "borrowed.pth").write_text("".join(f"{p}\n" for p in site.getsitepackages()))
    venv_python = root / "venv" / "bin" / "python"
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        venv_python,
        "install",
        "--no-deps",
        "--no-index",
        "-q",
        wheel,
        cwd=root,
    )
    return root / "venv" / "bin"


@pytest.mark.slow
def test_the_wheel_runs_outside_the_checkout(installed: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    where = _run(installed / "python", "-c", "import loraops; print(loraops.__file__)", cwd=tmp_path).stdout
    assert where.startswith(str(installed.parent)) and "/src/loraops" not in where  # the wheel, not the checkout
    assert "usage: loraops" in _run(installed / "loraops", "--help", cwd=tmp_path).stdout
    assert "train_llama3_8b" in _run(installed / "loraops", "list-configs", cwd=tmp_path).stdout

    write_jsonl(tmp_path / "data" / "train.jsonl", [{"prompt": "2+2?", "completion": "4"}] * 4)
    checked = _run(installed / "loraops", "check", f"model_name={tiny_model_dir}", cwd=tmp_path).stdout
    assert "records: 4; examples that train: 4" in checked  # the shipped train.yaml, with no ./configs here

    accelerate = "from loraops.distributed import accelerate_config_file as f; print(f('fsdp'))"
    fsdp = Path(_run(installed / "python", "-c", accelerate, cwd=tmp_path).stdout.strip())
    assert fsdp.is_file() and fsdp.is_relative_to(installed.parent) and fsdp.name == "fsdp.yaml"


def test_the_oldest_run_installs_the_declared_lower_bounds() -> None:
    """make test-oldest is only proof of the ranges if .ci/oldest.txt pins what pyproject.toml declares."""
    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    declared = {}
    for text in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(text)
        lower = [spec.version for spec in requirement.specifier if spec.operator in (">=", "==")]
        declared[canonicalize_name(requirement.name)] = lower[0] if lower else None
    pinned = {}
    for line in (REPO / ".ci" / "oldest.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pinned[canonicalize_name(name)] = version
    assert set(pinned) == set(declared), "every dependency has a lower bound, and the oldest run installs it"
    assert {name: Version(v) for name, v in pinned.items() if name != "torch"} == {
        name: Version(v) for name, v in declared.items() if name != "torch"
    }
    assert declared["torch"] == "2.11" and pinned["torch"] == "2.13.0"
