#!/usr/bin/env python3
"""Collect the wheels loraops needs on a machine without a package index, beyond what that machine has.

    python scripts/wheelhouse.py                                  # for the GPU image (scripts/targets/gpu-image.txt)
    python scripts/wheelhouse.py --provided-from /opt/venv/bin/python --out wheelhouse
    # there:  pip install --no-index --find-links wheelhouse -e .

The versions are the ones installed in this environment (the tested set, `make install`); the dependency walk
stops at every package the target already has, so torch's CUDA libraries and the like are never collected. Each
requirement on a package the target has is checked against the target's version, so an incompatible target is
refused here rather than by pip there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TARGET = REPO / "scripts" / "targets" / "gpu-image.txt"
DEFAULT_LIMIT_MB = 60.0
# manylinux tags a glibc 2.28+ x86_64 machine accepts, newest first (pip download needs them spelled out).
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64")

_PROBE = """import importlib.metadata as m, json, platform, sys
print(json.dumps({"python": platform.python_version(),
                  "packages": {d.metadata["Name"]: d.version for d in m.distributions() if d.metadata["Name"]}}))"""


class WheelhouseError(Exception):
    """What stops the wheelhouse, said so the user can act on it."""


@dataclass
class Target:
    """The machine the wheels are for: its Python and the packages it already has (version None: unknown)."""

    python: str
    provided: dict[str, str | None] = field(default_factory=dict)

    @property
    def environment(self) -> dict[str, str]:
        major_minor = ".".join(self.python.split(".")[:2])
        return {
            "python_version": major_minor,
            "python_full_version": self.python,
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": "x86_64",
            "os_name": "posix",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "extra": "",
        }


def read_target_file(path: Path) -> Target:
    """`python X.Y.Z` once, then one package per line, `name` or `name==version`; `#` starts a comment."""
    python, provided = None, {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("python "):
            python = line.split()[1]
            continue
        name, _, version = line.partition("==")
        if not name.strip() or " " in name.strip():
            raise WheelhouseError(f"{path}:{number}: expected `name` or `name==version`, got {raw.strip()!r}")
        provided[str(canonicalize_name(name.strip()))] = version.strip() or None
    if python is None:
        raise WheelhouseError(f"{path}: no `python X.Y.Z` line (the target's Python version)")
    return Target(python, provided)


def probe_target(python: str) -> Target:
    """The Python and packages of another interpreter on this machine (a venv built like the target)."""
    done = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True)
    if done.returncode != 0:
        raise WheelhouseError(f"could not ask {python} for its packages: {done.stderr.strip()[-300:]}")
    found = json.loads(done.stdout)
    packages = {str(canonicalize_name(name)): version for name, version in found["packages"].items()}
    return Target(found["python"], packages)


def project_requirements(pyproject: Path) -> tuple[list[Requirement], list[Requirement]]:
    """loraops' own dependencies, and its build system's (pip builds the editable install offline too)."""
    data = tomllib.loads(pyproject.read_text())
    runtime = [Requirement(text) for text in data["project"]["dependencies"]]
    build = [Requirement(text) for text in data["build-system"]["requires"]]
    return runtime, build


def _applies(requirement: Requirement, target: Target, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**target.environment, "extra": extra}) for extra in extras | {""})


def _check_provided(requirement: Requirement, target: Target, needed_by: str) -> None:
    version = target.provided[canonicalize_name(requirement.name)]
    if version is not None and not requirement.specifier.contains(Version(version), prereleases=True):
        raise WheelhouseError(
            f"{needed_by} needs {requirement}, the target has {requirement.name} {version}: "
            "install a matching version there, or build the wheelhouse for a target without it"
        )


def closure(roots: list[Requirement], target: Target) -> dict[str, str]:
    """Name -> version installed here of everything `roots` need that the target does not have."""
    chosen: dict[str, str] = {}
    extras_of: dict[str, set[str]] = {}
    # (requirement, who needs it, the extras asked of that parent: they decide its `extra == ...` markers)
    pending: list[tuple[Requirement, str, set[str]]] = [(requirement, "loraops", set()) for requirement in roots]
    while pending:
        requirement, needed_by, parent_extras = pending.pop()
        if not _applies(requirement, target, parent_extras):
            continue
        name = canonicalize_name(requirement.name)
        if name in target.provided:
            _check_provided(requirement, target, needed_by)
            pending += _extra_requirements(requirement, target)
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise WheelhouseError(
                f"{needed_by} needs {requirement}, which is not installed here: run `make install`"
            ) from None
        if not requirement.specifier.contains(Version(dist.version), prereleases=True):
            raise WheelhouseError(f"{needed_by} needs {requirement}; {dist.version} is installed here")
        extras = extras_of.get(name, set()) | set(requirement.extras)
        if name in chosen and extras == extras_of[name]:
            continue
        chosen[name], extras_of[name] = dist.version, extras
        parent = f"{dist.metadata['Name']} {dist.version}"
        pending += [(Requirement(text), parent, extras) for text in dist.requires or []]
    return chosen


def _extra_requirements(requirement: Requirement, target: Target) -> list[tuple[Requirement, str, set[str]]]:
    """What the extras asked of a package the target has add (fsspec[http] needs aiohttp, which it may lack)."""
    if not requirement.extras:
        return []
    try:
        dist = metadata.distribution(requirement.name)
    except metadata.PackageNotFoundError:
        return []
    extras, parent = set(requirement.extras), f"{requirement.name}[{','.join(sorted(requirement.extras))}]"
    children = [Requirement(text) for text in dist.requires or []]
    only_extra = [child for child in children if _applies(child, target, extras) and not _applies(child, target, set())]
    return [(child, parent, extras) for child in only_extra]


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def fetch(packages: dict[str, str], target: Target, out: Path) -> None:
    """A wheel of each package for the target; sdist-only packages are built here and must come out pure Python."""
    python_tag = "".join(target.python.split(".")[:2])
    platform_args = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    for name, version in sorted(packages.items()):
        pin = f"{name}=={version}"
        done = _pip(
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            python_tag,
            "--implementation",
            "cp",
            *platform_args,
            "--dest",
            str(out),
            pin,
        )
        if done.returncode == 0:
            continue
        built = _pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), pin)
        if built.returncode != 0:
            raise WheelhouseError(
                f"no wheel of {pin} for Python {target.python} and none could be built: "
                f"{(done.stderr or built.stderr).strip()[-400:]}"
            )
        impure = [
            wheel.name
            for wheel in out.glob(f"{name.replace('-', '_')}-*.whl")
            if not wheel.name.endswith("-none-any.whl")
        ]
        if impure:
            raise WheelhouseError(
                f"{pin} has no wheel for the target and builds here only for this machine: {impure[0]}"
            )


def build(target: Target, out: Path, limit_mb: float | None) -> tuple[dict[str, str], float]:
    """Write the wheelhouse atomically: into a temporary folder beside `out`, renamed into place when complete."""
    runtime, build_system = project_requirements(REPO / "pyproject.toml")
    packages = closure(runtime, target)
    # pip builds the editable install in an isolated environment: it needs the build backend even where the
    # target has one, so it is collected whatever the target says.
    packages |= closure(build_system, Target(target.python))
    if out.exists() and not (out / "requirements.txt").is_file():
        raise WheelhouseError(f"{out} exists and is not a wheelhouse this script wrote: not replacing it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        fetch(packages, target, staging)
        size_mb = sum(wheel.stat().st_size for wheel in staging.iterdir()) / 2**20
        if limit_mb is not None and size_mb > limit_mb:
            biggest = sorted(staging.iterdir(), key=lambda wheel: wheel.stat().st_size, reverse=True)[:3]
            names = ", ".join(f"{w.name} ({w.stat().st_size / 2**20:.1f} MB)" for w in biggest)
            raise WheelhouseError(f"the wheelhouse would take {size_mb:.1f} MB, over {limit_mb:g} MB; largest: {names}")
        (staging / "requirements.txt").write_text("".join(f"{n}=={v}\n" for n, v in sorted(packages.items())))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return packages, size_mb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--target", type=Path, default=DEFAULT_TARGET, help="file: the target's Python and packages")
    source.add_argument("--provided-from", metavar="PYTHON", help="take Python and packages from this interpreter")
    parser.add_argument("--out", type=Path, default=REPO / "wheelhouse", help="folder to write (default wheelhouse/)")
    parser.add_argument("--max-mb", type=float, default=DEFAULT_LIMIT_MB, help="refuse a bigger wheelhouse (0: none)")
    args = parser.parse_args(argv)
    try:
        target = probe_target(args.provided_from) if args.provided_from else read_target_file(args.target)
        packages, size_mb = build(target, args.out, args.max_mb or None)
    except (WheelhouseError, OSError) as error:
        print(f"wheelhouse: {error}", file=sys.stderr)
        return 2
    print(f"{len(packages)} packages for Python {target.python}, {size_mb:.1f} MB in {args.out}")
    print(f"there: pip install --no-index --find-links {args.out.name} -e .")
    return 0


if __name__ == "__main__":
    sys.exit(main())
