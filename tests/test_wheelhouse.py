"""make wheelhouse: the wheels loraops needs on a machine without a package index, beyond what it has."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from support import REPO, write_jsonl

sys.path.insert(0, str(REPO / "scripts"))
import wheelhouse  # noqa: E402

SCRIPT = REPO / "scripts" / "wheelhouse.py"


def _run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done


def test_a_bad_target_line_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "target.txt"
    target.write_text("python 3.12.3\ntorch==2.11.0\nnot a package name\n")
    assert wheelhouse.main(["--target", str(target), "--out", str(tmp_path / "wh")]) == 2
    assert f"{target}:3: expected `name` or `name==version`" in capsys.readouterr().err
    target.write_text("torch\n")
    assert wheelhouse.main(["--target", str(target), "--out", str(tmp_path / "wh")]) == 2
    assert "no `python X.Y.Z` line" in capsys.readouterr().err
    assert not (tmp_path / "wh").exists()


def test_a_target_with_too_old_a_library_is_refused_here(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "target.txt"
    target.write_text("python 3.12.3\ntorch==2.11.0\ntransformers==4.57.1\n")
    assert wheelhouse.main(["--target", str(target), "--out", str(tmp_path / "wh")]) == 2
    err = capsys.readouterr().err
    assert "loraops needs transformers" in err and "the target has transformers 4.57.1" in err


def test_the_walk_stops_at_what_the_target_has() -> None:
    requirement = wheelhouse.Requirement
    has_torch = wheelhouse.Target("3.12.3", {"torch": None, "numpy": None})
    chosen = wheelhouse.closure([requirement("peft")], has_torch)
    assert "peft" in chosen and "transformers" in chosen and "torch" not in chosen and "numpy" not in chosen
    assert chosen["peft"] == metadata.version("peft")  # the version tested here, not the newest
    # Extras asked of a package the target has still need their own packages.
    has_fsspec = wheelhouse.Target("3.12.3", {"fsspec": None})
    assert "aiohttp" in wheelhouse.closure([requirement("fsspec[http]")], has_fsspec)
    assert wheelhouse.closure([requirement("fsspec")], has_fsspec) == {}
    # Markers are the target's: a requirement for an older Python is not collected for 3.12.
    assert wheelhouse.closure([requirement('peft; python_version < "3.9"')], has_torch) == {}


def test_an_existing_folder_it_did_not_write_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "wheelhouse"
    (out / "mine.txt").parent.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert wheelhouse.main(["--provided-from", sys.executable, "--out", str(out)]) == 2
    assert "is not a wheelhouse this script wrote" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "keep me" and [p.name for p in tmp_path.iterdir()] == ["wheelhouse"]


@pytest.mark.slow
def test_the_gpu_image_wheelhouse_fits_under_60_mb(tmp_path: Path) -> None:
    done = _run(sys.executable, SCRIPT, "--out", tmp_path / "wheelhouse", cwd=tmp_path)
    megabytes = float(done.stdout.split(" MB in ")[0].rsplit(", ", 1)[1])
    assert 0 < megabytes <= 60
    names = {line.split("==")[0] for line in (tmp_path / "wheelhouse" / "requirements.txt").read_text().split()}
    assert {"pydantic", "hydra-core", "datasets", "setuptools"} <= names
    assert not names & {"torch", "transformers", "peft", "accelerate", "numpy", "pandas", "pyarrow"}
    wheels = {path.name for path in (tmp_path / "wheelhouse").glob("*.whl")}
    assert any(w.startswith("pydantic_core-") and "-cp312-" in w for w in wheels)  # the target's Python, not ours
    assert len(wheels) == len(names)


@pytest.mark.slow
def test_it_installs_offline_beside_torch_transformers_and_peft(tmp_path: Path, tiny_model_dir: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    # At the versions installed here, their dependencies too: the wheels come at the versions tested here, and
    # the script rightly refuses a target whose numpy or fsspec they do not accept.
    here = tmp_path / "constraints.txt"
    here.write_text(
        "".join(
            f"{d.metadata['Name']}=={d.version}\n" for d in metadata.distributions() if d.metadata["Name"] != "loraops"
        )
    )
    _run(venv / "bin" / "pip", "install", "--quiet", "-c", here, "torch", "transformers", "peft", cwd=tmp_path)

    wheels = tmp_path / "wheelhouse"
    _run(
        sys.executable,
        SCRIPT,
        "--provided-from",
        venv / "bin" / "python",
        "--out",
        wheels,
        "--max-mb",
        "0",
        cwd=tmp_path,
    )
    source = tmp_path / "loraops"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, source / name)
    _run(venv / "bin" / "pip", "install", "--quiet", "--no-index", "--find-links", wheels, "-e", source, cwd=source)
    _run(venv / "bin" / "pip", "check", cwd=source)

    write_jsonl(source / "data" / "train.jsonl", [{"prompt": "2+2?", "completion": "4"}] * 4)
    checked = _run(venv / "bin" / "loraops", "check", f"model_name={tiny_model_dir}", cwd=source).stdout
    assert "records: 4; examples that train: 4" in checked
