"""Remote training, without a server: settings, ssh/rsync command lines, quoting, secrets, local `latest`."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from support import CONFIGS, make_run

from loraops import remote
from loraops.config import EvalConfig, RemoteConfig, TrainConfig, load_config
from loraops.errors import ConfigError
from loraops.remote import RemoteError, RemoteSettings
from loraops.remote.actions import _local_run_path, _update_local_latest
from loraops.runs import RUN_FILE_ENV

SECRET = "hf_SuperSecretToken123"
LAKEFS_SECRET = "lakefsSecretKey987654"
INJECT = "$(touch {m}) `touch {m}` ; touch {m} && touch {m} | touch {m} 'q\" \\"


def settings(**kw: object) -> RemoteSettings:
    defaults: dict[str, object] = {
        "host": "gpu.example.org",
        "dir": "loraops",
        "user": "ana",
        "port": 2222,
        "ssh_key": "/keys/id ed25519",
    }
    return RemoteSettings(**{**defaults, **kw})  # type: ignore[arg-type]


def test_settings_precedence_env_then_dotenv_then_config(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# comment\nexport REMOTE_HOST=from-dotenv\nREMOTE_DIR='dir from dotenv'\n"
        f'REMOTE_USER="bob"\nHF_TOKEN={SECRET}\n'
    )
    config = RemoteConfig(
        host="from-config",
        dir="from-config",
        port=2200,
        python="/opt/py/bin/python3",
        ssh_options="-o Compression=yes",
        hf_home="/data/hf",
    )
    s = remote.load_settings(tmp_path, config, environ={"REMOTE_HOST": "from-env", "CUDA_VISIBLE_DEVICES": "0,1"})
    assert (s.host, s.dir, s.user, s.port) == ("from-env", "dir from dotenv", "bob", 2200)
    assert s.python == "/opt/py/bin/python3"
    assert s.ssh_args == ["-o", "Compression=yes"] and s.destination == "bob@from-env"
    assert dict(s.forward_env) == {"CUDA_VISIBLE_DEVICES": "0,1", "HF_HOME": "/data/hf"}
    assert s.local_dir == tmp_path.resolve()


def test_settings_errors(tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="REMOTE_HOST"):
        remote.load_settings(tmp_path, environ={})
    with pytest.raises(RemoteError, match="REMOTE_PORT"):
        remote.load_settings(tmp_path, environ={"REMOTE_HOST": "h", "REMOTE_PORT": "22x"})
    # A host or user that ssh would parse as an option could run a local command.
    for env in ({"REMOTE_HOST": "-oProxyCommand=touch /tmp/x"}, {"REMOTE_HOST": "h", "REMOTE_USER": "a;b"}):
        with pytest.raises(RemoteError, match="not a"):
            remote.load_settings(tmp_path, environ=env)


def test_remote_section_is_composed_like_every_other_key(tmp_path: Path) -> None:
    shutil.copytree(CONFIGS, tmp_path, dirs_exist_ok=True)
    (tmp_path / "remote.yaml").write_text("remote:\n  host: gpu1\n  dir: runs/loraops\n  port: 22\n")
    train_cfg = load_config(TrainConfig, tmp_path, "train", ["remote.port=2200"])
    assert (train_cfg.remote.host, train_cfg.remote.dir, train_cfg.remote.port) == ("gpu1", "runs/loraops", 2200)
    eval_cfg = load_config(EvalConfig, tmp_path, "eval_baseline", [])  # eval_baseline -> eval -> remote
    assert eval_cfg.remote.host == "gpu1"
    s = remote.load_settings(tmp_path, eval_cfg.remote, environ={"REMOTE_DIR": "elsewhere"})
    assert (s.host, s.dir, s.port) == ("gpu1", "elsewhere", 22)
    with pytest.raises(ConfigError, match="remote.hots"):
        load_config(TrainConfig, tmp_path, "train", ["remote.hots=gpu1"])
    (tmp_path / "remote.yaml").write_text("remote:\n  prot: 22\n")
    with pytest.raises(ConfigError, match="remote.prot.*did you mean `remote.port`"):
        load_config(TrainConfig, tmp_path, "train", [])


def test_ssh_command_line() -> None:
    argv = remote.ssh_argv(settings(), "echo hi")
    assert argv[:2] == ["ssh", "-o"] and "BatchMode=yes" in argv  # never hangs on a password prompt
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-i") + 1] == "/keys/id ed25519"
    assert argv[-2] == "ana@gpu.example.org"
    assert shlex.split(argv[-1]) == ["sh", "-c", "echo hi"]


def test_rsync_push_command_line() -> None:
    s = settings(dir="~/my runs")
    argv = remote.rsync_argv(s, "./", remote.remote_path(s) + "/", ["--delete"])
    assert "--protect-args" in argv and "--delete" in argv
    assert shlex.split(argv[argv.index("-e") + 1]) == remote.ssh_base(s)  # the key path keeps its space
    assert argv[-1] == "ana@gpu.example.org:my runs/"  # `~/` dropped: paths are relative to home anyway
    for path in ("/.venv/", "/outputs/", "/artifacts/", ".env*", "__pycache__/", "/.loraops-push"):
        assert path in remote.PUSH_EXCLUDES
    options = remote.push_options(s)
    assert "--delete" in options and options[-1] == "--filter=:- .gitignore"  # after the .env* exclude
    assert "--filter=:- .gitignore" not in remote.push_options(settings(push_gitignored=True))
    assert "--exclude=.env*" in remote.push_options(settings(push_gitignored=True))  # never pushed


def test_home_and_root_are_never_push_targets(tmp_path: Path) -> None:
    for value in ("~", "~/", "/", ".", "./"):
        with pytest.raises(RemoteError, match="home folder"):
            remote.load_settings(tmp_path, environ={"REMOTE_HOST": "h", "REMOTE_DIR": value})


def test_commands_call_the_projects_front_end() -> None:
    assert remote.loraops_command("train", "train_llama3_8b", ["lr=1e-4"]) == [
        ".venv/bin/loraops",
        "train",
        "--config-name",
        "train_llama3_8b",
        "lr=1e-4",
    ]
    init = remote.init_command(settings(python="/opt/py 3/python", packages_from=None))
    assert init[:2] == ["sh", "-c"] and "make install" in init[2] and init[-2:] == ["/opt/py 3/python", ""]


def test_secrets_are_never_forwarded(tmp_path: Path) -> None:
    env = {
        "REMOTE_HOST": "h",
        "HF_TOKEN": SECRET,
        "LAKEFS_SECRET_ACCESS_KEY": LAKEFS_SECRET,
        "LAKEFS_ACCESS_KEY_ID": "AKIAexample12",
        "HF_HOME": "/data/hf",
        "CUDA_VISIBLE_DEVICES": "1",
    }
    s = remote.load_settings(tmp_path, environ=env)
    script = remote.job_start_script(s, "job1", remote.loraops_command("train", "train", ["lr=1e-4"]))
    text = " ".join(remote.ssh_argv(s, script))
    assert SECRET not in text and LAKEFS_SECRET not in text and "HF_TOKEN" not in text and "LAKEFS" not in text
    assert "env CUDA_VISIBLE_DEVICES=1 HF_HOME=/data/hf .venv/bin/loraops" in script
    # Defence in depth: a secret typed into an override is refused before anything is sent.
    with pytest.raises(RemoteError, match="HF_TOKEN"):
        remote.check_no_secrets(["ssh", "h", f"train hub_token={SECRET}"], environ=env)


def test_quoting_stops_injection_in_dir_overrides_and_env(tmp_path: Path) -> None:
    """Run the remote side of a job start here, in a shell, as sshd would: nothing may execute."""
    marker = tmp_path / "pwned"
    weird_dir = "runs dir " + INJECT.format(m=marker)
    s = settings(dir=weird_dir, forward_env=(("HF_HOME", INJECT.format(m=marker)),))
    override = "model_name=" + INJECT.format(m=marker)
    script = remote.job_start_script(s, "job1", ["printf", "%s\\n", override, "run folder: x"])
    remote_command = remote.ssh_argv(s, script)[-1]
    home = tmp_path / "home"
    (home / weird_dir).mkdir(parents=True)
    subprocess.run(["bash", "-c", remote_command], cwd=home, check=True, timeout=30)
    job = home / weird_dir / remote.JOBS_DIR / "job1"
    for _ in range(100):
        if (job / "exit_code").exists():
            break
        subprocess.run(["sleep", "0.1"])
    assert (job / "exit_code").read_text().strip() == "0"
    assert override in (job / "job.log").read_text()  # arrived as one literal argument
    assert not marker.exists()
    assert (home / weird_dir / remote.JOBS_DIR / "latest").resolve() == job.resolve()


def _wait_for_exit_code(job: Path) -> str:
    for _ in range(100):
        if (job / "exit_code").exists():
            break
        subprocess.run(["sleep", "0.1"])
    return (job / "exit_code").read_text().strip()


def test_job_run_file_is_the_contract_not_the_log(tmp_path: Path) -> None:
    """The command writes its run folder to $LORAOPS_RUN_FILE; what it logs does not matter."""
    cmd = f'mkdir -p out/r1 && printf "out/r1\\n" >"${RUN_FILE_ENV}"; echo "any wording at all"; echo boom >&2; exit 3'
    script = remote.job_start_script(settings(dir=str(tmp_path)), "j", ["sh", "-c", cmd])
    subprocess.run(["sh", "-c", script], cwd=tmp_path, check=True)
    job = tmp_path / remote.JOBS_DIR / "j"
    assert _wait_for_exit_code(job) == "3"
    assert (job / remote.JOB_RUN_FILE).read_text().strip() == "out/r1"
    assert "boom" in (job / "job.log").read_text()
    assert not (tmp_path / "out" / "r1" / "remote.log").exists()  # the server's run folder is left as loraops wrote it


def test_a_pulled_run_lands_in_its_runs_folder_and_nowhere_else(tmp_path: Path) -> None:
    s = settings(local_dir=tmp_path)
    assert _local_run_path(s, "outputs/runs/r1", "outputs/runs") == tmp_path / "outputs" / "runs" / "r1"
    assert _local_run_path(s, "elsewhere/runs/r1", "elsewhere/runs/") == tmp_path / "elsewhere" / "runs" / "r1"
    assert _local_run_path(s, "/scratch/runs/r1", "/scratch/runs") == tmp_path / "outputs" / "runs" / "r1"
    # What a hostile or broken server could write in a job's run file: never a path out of the runs folder.
    for bad in (
        "configs",
        "src/loraops",
        "outputs/runs/../../configs",
        "../r1",
        "outputs/runs/..",
        "",
        "/etc",
        "outputs/runs/a/b",
        "outputs/runs/.hidden",
        "/scratch/runs/r1",
    ):
        with pytest.raises(RemoteError, match=r"a pulled run must be a run folder in outputs/runs/"):
            _local_run_path(s, bad, "outputs/runs")


def test_job_ids_are_names_never_paths(tmp_path: Path) -> None:
    for bad in ("../../configs", "a/b", "..", ".x"):
        with pytest.raises(RemoteError, match="is not a job id"):
            remote.pull(settings(local_dir=tmp_path), job=bad)
    assert not any(tmp_path.iterdir())


def test_pull_accepts_run_names_only(tmp_path: Path) -> None:
    for bad in ("..", "../x", "/etc", "a/b", ".hidden", "-rf"):
        with pytest.raises(RemoteError, match="give a run name"):
            remote.pull(settings(local_dir=tmp_path), bad)


def _fake_run(root: Path, name: str, status: str) -> Path:
    return make_run(root / "outputs" / "runs", name, status=status)


def test_local_latest_follows_the_newest_finished_run(tmp_path: Path) -> None:
    new = _fake_run(tmp_path, "2026-02-01_00-00-00", "finished")
    assert _update_local_latest(new)
    old = _fake_run(tmp_path, "2026-01-01_00-00-00", "finished")
    failed = _fake_run(tmp_path, "2026-03-01_00-00-00", "failed")
    assert not _update_local_latest(old)  # pulling an older run never moves latest back
    assert not _update_local_latest(failed)  # failed runs never become latest
    assert os.readlink(tmp_path / "outputs" / "runs" / "latest") == new.name


def test_cli_remote_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from loraops.cli import COMMANDS, main

    if "remote" not in COMMANDS:
        pytest.skip("cli.py has no `remote` command yet")
    for action in ("push", "init", "train", "eval", "eval-baseline", "pull", "logs"):
        with pytest.raises(SystemExit) as exit_:
            main(["remote", action, "--help"])
        assert exit_.value.code == 0
    for name in ("REMOTE_HOST", "REMOTE_DIR", "REMOTE_USER", "REMOTE_PORT"):
        monkeypatch.delenv(name, raising=False)
    shutil.copytree(CONFIGS, tmp_path / "configs")
    monkeypatch.chdir(tmp_path)  # no .env, and configs/remote.yaml names no host
    assert main(["remote", "train", "lr=1e-4"]) == 2
    assert "REMOTE_HOST" in capsys.readouterr().err
    assert main(["remote", "train", "lr=-1"]) == 2  # checked here, before anything is sent
    assert "lr=-1" in capsys.readouterr().err


def test_git_decides_what_a_push_sends(tmp_path: Path) -> None:
    from loraops.remote.pushed import project_files, sent_before

    assert project_files(tmp_path) is None  # not a git repository: the caller falls back and says so
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    files = {
        "train.py": "x",
        "data/a.jsonl": "{}",
        "hf_token.txt": "secret",
        "notes.md": "mine",
        ".env": "HF_TOKEN=x",
        "data/.env.local": "x",
        "outputs/runs/r1/metrics.json": "{}",
        "src/__pycache__/m.pyc": "x",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / ".gitignore").write_text("hf_token.txt \n")  # a trailing space, stripped by git
    (tmp_path / ".git" / "info" / "exclude").write_text("notes.md\n")
    subprocess.run(["git", "add", "-f", ".env"], cwd=tmp_path, check=True)  # even a tracked .env stays home
    assert project_files(tmp_path) == [".gitignore", "data/a.jsonl", "train.py"]
    assert "notes.md" in (project_files(tmp_path, include_ignored=True) or [])
    assert sent_before('{"files": ["a.py", "../../etc/passwd", "/etc/hosts", 3]}') == ["a.py"]
    assert sent_before("A copy of a loraops project (an older marker)") == []
