"""Remote training against a real OpenSSH server on 127.0.0.1: push, init, train, eval, pull, failures.

The session fixture starts Debian's sshd on a free port with a host key and a client key made for
the run; the "server" is this machine, so the tiny test model's path works on both sides. `init`
reuses this venv's packages (REMOTE_PACKAGES_FROM) so it takes seconds, not a full install.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import REPO

from loraops import remote
from loraops.remote import RemoteError, RemoteSettings
from loraops.runs import RunDir

SSHD = Path("/usr/sbin/sshd")
_TOOLS = {
    "sshd (openssh-server)": SSHD.exists(),
    "rsync": shutil.which("rsync"),
    "ssh": shutil.which("ssh"),
    "ssh-keygen": shutil.which("ssh-keygen"),
}
_MISSING = [name for name, found in _TOOLS.items() if not found]
pytestmark = [
    pytest.mark.skipif(
        bool(_MISSING), reason=f"not installed: {', '.join(_MISSING)} (apt-get install openssh-server rsync)"
    ),
    pytest.mark.xdist_group("sshd"),  # with -n: one worker runs them all, on one sshd and one initialised server
]
EVAL_OVERRIDES = ["limit=2", "max_new_tokens=4", "splits=[test]", "batch_size=2"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(100):
        if proc.poll() is not None:
            pytest.fail(f"sshd exited with {proc.returncode}: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"sshd did not listen on {port}: {log.read_text()}")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """sshd on 127.0.0.1:<free port>, key login only, stopped at the end of the session."""
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    try:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
    except PermissionError:
        pytest.skip("sshd needs /run/sshd, which only root can create")
    port = _free_port()
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
        "LogLevel ERROR\n"
    )
    log = d / "sshd.log"
    with log.open("wb") as log_fh:
        proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(d / "sshd_config"), "-p", str(port)],
            stdout=log_fh,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, proc, log)
        known_hosts = d / "known_hosts"  # a throwaway host key: trust it, and only in this file
        yield {
            "REMOTE_HOST": "127.0.0.1",
            "REMOTE_PORT": str(port),
            "REMOTE_USER": getpass.getuser(),
            "REMOTE_SSH_KEY": str(d / "client_key"),
            "REMOTE_SSH_OPTS": f"-o StrictHostKeyChecking=no -o UserKnownHostsFile={known_hosts} -o LogLevel=ERROR",
            "REMOTE_PYTHON": sys.executable,
            "REMOTE_PACKAGES_FROM": sys.executable,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def laptop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project as a user's laptop holds it, so pulls never touch this checkout's outputs."""
    dest = tmp_path_factory.mktemp("laptop") / "loraops"
    shutil.copytree(
        REPO,
        dest,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".venv", "outputs", "artifacts", "models", ".git", "__pycache__", "*.egg-info", ".pytest_cache"
        ),
    )
    (dest / ".env").write_text("HF_TOKEN=hf_NeverLeavesTheLaptop1234\n")
    (dest / ".env.local").write_text("HF_TOKEN=hf_NeverLeavesTheLaptop1234\n")
    (dest / "data" / ".env").write_text("LAKEFS_SECRET_KEY=NeverLeavesTheLaptop\n")
    (dest / ".gitignore").write_text((REPO / ".gitignore").read_text() + "*.scratch\n")
    (dest / "data" / "notes.scratch").write_text("ignored by git, so never pushed\n")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)  # a checkout, as a user's project is
    return dest


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, sshd: dict[str, str], laptop: Path) -> RemoteSettings:
    """Settings for a remote dir with a space in its name, pushed and initialised once."""
    remote_dir = tmp_path_factory.mktemp("server") / "gpu box dir"
    s = remote.load_settings(laptop, environ={**sshd, "REMOTE_DIR": str(remote_dir), "HF_HOME": str(remote_dir / "hf")})
    assert remote.push(s) == 0
    assert (remote_dir / "src" / "loraops" / "remote" / "actions.py").is_file() and (
        remote_dir / "data" / "eval"
    ).is_dir()
    for excluded in (".venv", "outputs", "artifacts", ".env", ".env.local", "data/.env", "data/notes.scratch"):
        assert not (remote_dir / excluded).exists(), excluded
    assert (remote_dir / remote.PUSH_MARKER).is_file()
    result = remote.init(s)
    assert result.exit_code == 0, result.log and result.log.read_text()[-3000:]
    assert result.log is not None and "GPUs: none (no CUDA device visible)" in result.log.read_text()  # reported
    assert (remote_dir / ".venv" / "bin" / "loraops").is_file()
    assert (remote_dir / "models" / "SmolLM2-135M-Instruct" / "config.json").is_file()
    return s


def _train_overrides(tiny_overrides: list[str]) -> list[str]:
    # The remote run must land in the remote project's outputs/runs, not in a test tmp folder.
    return [o for o in tiny_overrides if not o.startswith("output_dir=")] + ["epochs=1"]


def test_push_init_train_eval_pull(server: RemoteSettings, tiny_overrides: list[str]) -> None:
    result = remote.train(server, "train", _train_overrides(tiny_overrides))
    assert result.exit_code == 0, result.log and result.log.read_text()[-3000:]
    run = result.run_dir
    assert run is not None and run.parent == server.local_dir / "outputs" / "runs"
    assert (run / "model" / "adapter_model.safetensors").is_file()
    assert RunDir(run).is_finished()
    assert "run folder:" in RunDir(run).remote_log.read_text()  # the job's log travels with the run
    assert (run.parent / "latest").resolve() == run.resolve()
    assert "hf_NeverLeavesTheLaptop1234" not in result.log.read_text()  # type: ignore[union-attr]

    assert remote.evaluate(server, "eval", EVAL_OVERRIDES).exit_code == 0
    assert (server.local_dir / "artifacts" / "metrics" / run.name / "summary.json").is_file()
    assert remote.evaluate(server, "eval_baseline", EVAL_OVERRIDES).exit_code == 0
    assert any((server.local_dir / "artifacts" / "metrics" / "baseline").glob("*/summary.json"))

    # A fresh laptop copy: `pull` alone brings the remote latest run and the metrics.
    fresh = server.model_copy(update={"local_dir": server.local_dir.parent / "fresh"})
    pulled = remote.pull(fresh)
    assert pulled.run_dir == fresh.local_dir / "outputs" / "runs" / run.name and pulled.latest_updated
    assert os.readlink(fresh.local_dir / "outputs" / "runs" / "latest") == run.name
    assert (fresh.local_dir / "artifacts" / "metrics" / run.name / "test.json").is_file()


def test_failed_job_propagates_its_exit_status_and_brings_the_log_home(
    server: RemoteSettings, tiny_overrides: list[str]
) -> None:
    latest = server.local_dir / "outputs" / "runs" / "latest"
    before = os.readlink(latest) if latest.is_symlink() else None
    result = remote.train(server, "train", [*_train_overrides(tiny_overrides), "lora_target_modules=[no_such_proj]"])
    assert result.exit_code == 2  # loraops' own exit status for a config error, through ssh
    assert result.log is not None and "no_such_proj" in result.log.read_text()
    assert result.run_dir is not None and "no_such_proj" in RunDir(result.run_dir).remote_log.read_text()
    assert RunDir(result.run_dir).status() == "failed"
    assert (os.readlink(latest) if latest.is_symlink() else None) == before  # a failed run never becomes latest
    with pytest.raises(RemoteError, match="pulling outputs/runs/1999-01-01_00-00-00 failed"):
        remote.pull(server, "1999-01-01_00-00-00")
    assert not (server.local_dir / "outputs" / "runs" / "1999-01-01_00-00-00").exists()


def test_pull_reads_the_job_file_whatever_the_log_says_and_follows_output_dir(
    server: RemoteSettings, tiny_overrides: list[str]
) -> None:
    """A server whose loraops logs in other words, and a run in another output_dir: pull still finds it."""
    train_py = server.local_dir / "src" / "loraops" / "train.py"
    original = train_py.read_text()
    assert 'log.info("run folder: %s%s"' in original
    train_py.write_text(original.replace('log.info("run folder: %s%s"', 'log.info("training into %s%s"'))
    try:
        remote.push(server)
        overrides = [*_train_overrides(tiny_overrides), "max_steps=1", "output_dir=elsewhere/runs"]
        result = remote.train(server, "train", overrides, runs_dir="elsewhere/runs")  # as the CLI passes output_dir
    finally:
        train_py.write_text(original)
        remote.push(server)
    assert result.exit_code == 0, result.log and result.log.read_text()[-3000:]
    assert result.log is not None and "run folder:" not in result.log.read_text()
    assert result.run_dir is not None and result.run_dir.parent == server.local_dir / "elsewhere" / "runs"
    assert RunDir(result.run_dir).is_finished() and RunDir(result.run_dir).model_dir.is_dir()
    assert (server.local_dir / "elsewhere" / "runs" / "latest").resolve() == result.run_dir.resolve()
    again = remote.pull(server, job=result.job, runs_dir="elsewhere/runs")
    assert again.run_dir == result.run_dir


def test_a_hostile_run_file_cannot_make_pull_write_outside_the_runs_folder(server: RemoteSettings) -> None:
    job = remote.start_job(server, "echo", ["echo", "hi"])
    assert remote.wait_job(server, job, follow=False) == 0
    before = {p: p.read_bytes() for p in (server.local_dir / "src" / "loraops").rglob("*.py")}
    (Path(server.remote_dir) / "src" / "loraops" / "planted.py").write_text("print('pwned')\n")  # the server's own
    for hostile in ("configs", "src/loraops", "outputs/runs/../../src"):
        (Path(server.remote_dir) / remote.JOBS_DIR / job / remote.JOB_RUN_FILE).write_text(hostile + "\n")
        with pytest.raises(RemoteError, match="a pulled run must be a run folder in outputs/runs/"):
            remote.pull(server, job=job)
    assert (server.local_dir / "configs").is_symlink()  # the project's files are as they were
    assert {p: p.read_bytes() for p in (server.local_dir / "src" / "loraops").rglob("*.py")} == before
    (Path(server.remote_dir) / "src" / "loraops" / "planted.py").unlink()


def test_detached_job_survives_and_logs_follows_it(
    server: RemoteSettings, tiny_overrides: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    started = remote.train(server, "train", [*_train_overrides(tiny_overrides), "max_steps=1"], detach=True)
    assert started.run_dir is None  # the ssh session that started it is gone already
    assert remote.logs(server) == 0  # follows the last job to its end, with its exit status
    assert "run folder:" in capsys.readouterr().out
    assert remote.logs(server, started.job, follow=False) == 0
    with pytest.raises(RemoteError, match="no job"):
        remote.logs(server, "no-such-job", follow=False)


def test_push_never_deletes_what_it_did_not_put_there(sshd: dict[str, str], laptop: Path, tmp_path: Path) -> None:
    target = tmp_path / "someone else's folder"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work\n")
    s = remote.load_settings(laptop, environ={**sshd, "REMOTE_DIR": str(target)})
    with pytest.raises(RemoteError, match="already holds files that no loraops push put there.*touch"):
        remote.push(s)
    assert (target / "thesis.tex").read_text() == "years of work\n" and sorted(os.listdir(target)) == ["thesis.tex"]
    home = remote.load_settings(laptop, environ={**sshd, "REMOTE_DIR": str(Path.home())})
    with pytest.raises(RemoteError, match="is the home folder"):
        remote.push(home)
    # A folder marked by hand (or by an older loraops): pushed to, and still nothing deleted that no push sent.
    (target / remote.PUSH_MARKER).write_text("")
    remote.push(s)
    assert (target / "thesis.tex").read_text() == "years of work\n" and (target / "pyproject.toml").is_file()


def test_push_sends_what_git_would_commit_and_deletes_only_what_it_sent(
    sshd: dict[str, str], laptop: Path, tmp_path: Path
) -> None:
    target = tmp_path / "copy"
    s = remote.load_settings(laptop, environ={**sshd, "REMOTE_DIR": str(target)})
    gitignore = (laptop / ".gitignore").read_text()
    made = [laptop / "hf_token.txt", laptop / "private-notes.md", laptop / "data" / "extra.jsonl"]
    (laptop / ".gitignore").write_text(gitignore + "hf_token.txt \n")  # git strips the space; rsync's filter did not
    (laptop / ".git" / "info" / "exclude").write_text("private-notes.md\n")  # ignored by git, in no .gitignore
    for path, text in zip(made, ("hf_" + "Z" * 34 + "\n", "mine\n", "{}\n")):
        path.write_text(text)
    try:
        ignored = subprocess.run(
            ["git", "check-ignore", "hf_token.txt", "private-notes.md"], cwd=laptop, text=True, capture_output=True
        ).stdout.split()
        assert ignored == ["hf_token.txt", "private-notes.md"]
        remote.push(s)
        assert not (target / "hf_token.txt").exists() and not (target / "private-notes.md").exists()
        assert (target / "data" / "extra.jsonl").is_file() and (target / "configs").is_symlink()
        (target / "server-notes.txt").write_text("the server's own\n")
        (laptop / "data" / "extra.jsonl").unlink()
        remote.push(s)
        assert not (target / "data" / "extra.jsonl").exists()  # sent by the last push, gone here: deleted there
        assert (target / "server-notes.txt").exists()  # no push ever sent it: kept
    finally:
        (laptop / ".gitignore").write_text(gitignore)
        (laptop / ".git" / "info" / "exclude").write_text("")
        for path in made:
            path.unlink(missing_ok=True)


def test_outside_git_the_push_falls_back_to_rsync_filters_and_says_so(
    sshd: dict[str, str], laptop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "not-a-checkout"
    shutil.copytree(laptop, plain, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    s = remote.load_settings(plain, environ={**sshd, "REMOTE_DIR": str(tmp_path / "copy")})
    remote.push(s)
    assert "is not a git repository" in capsys.readouterr().err
    assert (tmp_path / "copy" / "pyproject.toml").is_file() and not (tmp_path / "copy" / ".env").exists()
    assert not (tmp_path / "copy" / "data" / "notes.scratch").exists()


def test_unreachable_host(sshd: dict[str, str], laptop: Path) -> None:
    s = remote.load_settings(laptop, environ={**sshd, "REMOTE_PORT": str(_free_port()), "REMOTE_DIR": "x"})
    with pytest.raises(RemoteError, match="cannot reach"):
        remote.push(s)
    with pytest.raises(RemoteError, match="cannot reach"):
        remote.train(s, "train", [])


def test_remote_dir_with_shell_characters_runs_nothing(sshd: dict[str, str], laptop: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    odd = tmp_path / f"a dir $(touch {marker}) `touch {marker}`; touch {marker}"
    s = remote.load_settings(laptop, environ={**sshd, "REMOTE_DIR": str(odd)})
    assert remote.push(s) == 0
    assert (odd / "pyproject.toml").is_file()
    job = remote.start_job(s, "echo", ["echo", f"$(touch {marker})"])
    assert remote.wait_job(s, job, follow=False) == 0
    assert (odd / remote.JOBS_DIR / job / "job.log").read_text().strip() == f"$(touch {marker})"
    assert not marker.exists()
