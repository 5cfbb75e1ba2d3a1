"""`publish_hub` against a fake Hub on 127.0.0.1: what arrives, privacy, retries, failures, the token."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from hub_server import FakeHub
from support import HUB_REPO as REPO
from support import HUB_TOKEN as TOKEN
from support import compare_cfg, evaluated, fake_metrics, finished_run

from loraops.errors import LoraopsError
from loraops.models import front_matter
from loraops.publish import NotImprovedError, publish_hub

# huggingface_hub's own LFS upload passes a file as `data=`, which httpx2 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")


@pytest.fixture
def run(tmp_path: Path, tiny_adapter_dir: Path, tiny_model_dir: Path) -> Path:
    folder = finished_run(tmp_path, "r1", tiny_adapter_dir, model_name=str(tiny_model_dir))
    evaluated(tmp_path, folder, 80.0, 0.0, model_name=str(tiny_model_dir))
    return folder


def publish(tmp_path: Path, run: Path, **kwargs: Any) -> Any:
    return publish_hub(str(run), compare_cfg=compare_cfg(tmp_path), **kwargs)


def assert_token_only_in_authorization(hub: FakeHub) -> None:
    assert hub.requests
    for request in hub.requests:
        assert TOKEN not in request.path and TOKEN.encode() not in request.body
        assert all(TOKEN not in value for value in request.headers.values())
        assert request.authorization in (None, f"Bearer {TOKEN}")
    # Storage uploads (pre-signed URLs) and huggingface_hub's agent-registry fetch go without it.
    unauthenticated = ("/lfs/", "/api/agent-harnesses")
    assert all(r.authorization == f"Bearer {TOKEN}" for r in hub.requests if not r.path.startswith(unauthenticated))


def assert_no_token_in_files(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_upload_private_repo_with_adapter_tokenizer_and_card(
    hub: FakeHub,
    run: Path,
    tmp_path: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    result = publish(tmp_path, run, repo_id=REPO)
    assert result.destination == f"hf:{REPO}" and result.url == f"{hub.url}/{REPO}" and not result.forced
    repo = hub.repos[REPO]
    assert repo.private is True
    tree = hub.tree(REPO)
    model = run / "model"
    expected = {p.name for p in model.iterdir() if p.name != "README.md"} | {"README.md", ".gitattributes"}
    assert set(tree) == expected  # adapter, tokenizer, card; the run's records stay local
    for name in expected - {"README.md", ".gitattributes", "adapter_config.json", "tokenizer_config.json"}:
        assert tree[name] == (model / name).read_bytes(), name
    # Only the class name changes, so that transformers 4.x loads it too (tests/test_transformers4.py).
    tokenizer = json.loads(tree["tokenizer_config.json"])
    assert tokenizer == json.loads((model / "tokenizer_config.json").read_text()) | {
        "tokenizer_class": "PreTrainedTokenizerFast"
    }
    assert "adapter_model.safetensors" in repo.lfs  # arrived through LFS batch + upload + verify
    adapter_config = json.loads(tree["adapter_config.json"])
    assert adapter_config["base_model_name_or_path"] == tiny_model_dir.name  # no path from this machine
    card = tree["README.md"].decode()
    meta = front_matter(card)
    assert meta["library_name"] == "peft" and "loraops" in meta["tags"] and "forced" not in meta
    assert 'PeftModel.from_pretrained(base, "tester/tabula-adapter")' in card
    for name, content in tree.items():  # no path of this machine leaves with the adapter
        assert str(tiny_model_dir.parent).encode() not in content and b"/home/alice" not in content, name
    assert len(repo.commits) == 1 and repo.commits[0]["header"]["summary"] == "loraops: publish run r1"
    reference = json.loads((tmp_path / "artifacts" / "reference.json").read_text())
    assert reference["destination"] == f"hf:{REPO}" and reference["run"] == "r1"
    assert not list((tmp_path / "artifacts").glob(".hub-staging-*"))

    assert_token_only_in_authorization(hub)
    out, err = capsys.readouterr()
    assert TOKEN not in out + err and TOKEN not in caplog.text
    assert_no_token_in_files(tmp_path)


def test_public_flag_repo_from_env_and_merged(
    hub: FakeHub, run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_REPO_ID", "tester/tabula-merged")
    result = publish(tmp_path, run, public=True, merged=True)
    repo = hub.repos["tester/tabula-merged"]
    assert repo.private is False and result.merged
    tree = hub.tree("tester/tabula-merged")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(tree)
    assert "adapter_config.json" not in tree
    assert front_matter(tree["README.md"].decode())["library_name"] == "transformers"
    for name, content in tree.items():  # no path of this machine leaves with the model
        assert str(tmp_path).encode() not in content and b"/home/alice" not in content, name
        assert str(run.parent.parent.parent).encode() not in content, name
    assert_token_only_in_authorization(hub)


def test_retry_uploads_to_the_same_repository_safely(hub: FakeHub, run: Path, tmp_path: Path) -> None:
    publish(tmp_path, run, repo_id=REPO)
    first = hub.tree(REPO)
    uploads = [r for r in hub.requests if r.method == "PUT"]
    publish(tmp_path, run, repo_id=REPO)  # repository exists (409), files unchanged
    assert hub.tree(REPO) == first
    assert [r for r in hub.requests if r.method == "PUT"] == uploads  # nothing sent twice
    assert len(hub.repos[REPO].commits) == 1  # an unchanged publish makes no empty commit


def test_refused_commit_leaves_nothing_and_a_retry_succeeds(hub: FakeHub, run: Path, tmp_path: Path) -> None:
    hub.fail["commit"] = (422, f"your token {TOKEN} is not allowed to commit here")
    with pytest.raises(LoraopsError) as failed:
        publish(tmp_path, run, repo_id=REPO)
    message = str(failed.value)
    assert "422" in message and "A retry is safe" in message
    assert TOKEN not in message and "<redacted>" in message  # even when the server echoes it
    assert failed.value.__cause__ is None and failed.value.__suppress_context__
    assert set(hub.tree(REPO)) == {".gitattributes"}  # the LFS upload arrived, but no commit shows it
    assert not (tmp_path / "artifacts" / "reference.json").exists()
    assert not list((tmp_path / "artifacts").glob(".hub-staging-*"))

    hub.fail["lfs_upload"] = (403, "storage refused")
    hub.lfs_store.clear()
    with pytest.raises(LoraopsError, match="403"):
        publish(tmp_path, run, repo_id=REPO)
    assert set(hub.tree(REPO)) == {".gitattributes"}

    publish(tmp_path, run, repo_id=REPO)
    assert "adapter_model.safetensors" in hub.tree(REPO) and len(hub.repos[REPO].commits) == 1
    assert_token_only_in_authorization(hub)


def test_rejected_token_and_unreachable_hub_are_clear_errors(
    hub: FakeHub, run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "hf_" + "WrongTokenWrongToken0123456789"
    with pytest.raises(LoraopsError, match="rejected the token") as failed:
        publish(tmp_path, run, repo_id=REPO, token=wrong)
    assert wrong not in str(failed.value) and not hub.repos

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(LoraopsError, match=f"cannot reach http://127.0.0.1:{port}") as failed:
        publish(tmp_path, run, repo_id=REPO)
    assert TOKEN not in str(failed.value)
    assert not (tmp_path / "artifacts" / "reference.json").exists()
    assert not list((tmp_path / "artifacts").glob(".hub-staging-*"))


def test_missing_repo_or_token_fail_before_any_work(
    hub: FakeHub, tmp_path: Path, tiny_adapter_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unevaluated = finished_run(tmp_path, "r1", tiny_adapter_dir)  # the gate would refuse it: these errors come first
    with pytest.raises(LoraopsError, match="no Hub repository: pass --repo"):
        publish(tmp_path, unevaluated)
    with pytest.raises(LoraopsError, match="OWNER/NAME"):
        publish(tmp_path, unevaluated, repo_id="just-a-name")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(LoraopsError, match="no Hugging Face token: set HF_TOKEN"):
        publish(tmp_path, unevaluated, repo_id=REPO)
    assert hub.requests == [] and not (tmp_path / "artifacts").exists()


def test_gate_refuses_before_upload_and_force_marks_the_card(hub: FakeHub, run: Path, tmp_path: Path) -> None:
    fake_metrics(tmp_path / "m", "r1", {"test": 0.0})  # the base model scored 0.0 too
    with pytest.raises(NotImprovedError, match="did not beat its reference"):
        publish(tmp_path, run, repo_id=REPO)
    assert hub.requests == []
    result = publish(tmp_path, run, repo_id=REPO, force=True)
    meta = front_matter(hub.tree(REPO)["README.md"].decode())
    assert result.forced and meta["forced"] is True


def test_existing_public_repo_needs_public_flag(hub: FakeHub, run: Path, tmp_path: Path) -> None:
    publish(tmp_path, run, repo_id=REPO, public=True)
    with pytest.raises(LoraopsError, match="exists and is public; pass --public"):
        publish(tmp_path, run, repo_id=REPO)
    assert len(hub.repos[REPO].commits) == 1
