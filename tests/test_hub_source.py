"""`fetch_hub_dataset` against a fake Hub on 127.0.0.1: splits, subsets, revisions, the cache, and errors."""

from __future__ import annotations

import io
import json
import socket
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hub_server import FakeHub
from support import HUB_TOKEN as TOKEN

from loraops.data.hub_source import HubSnapshot, fetch_hub_dataset
from loraops.errors import ConfigError, DataError, LoraopsError

CONFIGS_README = """---
configs:
- config_name: en
  default: true
  data_files:
  - split: train
    path: en/train-*.jsonl
  - split: test
    path: en/test.jsonl
- config_name: fr
  data_dir: fr
---
# Two subsets: `en` with explicit files, `fr` by the naming convention inside its folder.
"""


def jsonl(*texts: str) -> str:
    return "".join(json.dumps({"text": t}) + "\n" for t in texts)


def parquet(*texts: str) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table({"text": list(texts)}), out)
    return out.getvalue()


@pytest.fixture
def configs(hub: FakeHub) -> str:
    return hub.add_dataset(
        "tester/configs",
        {
            "README.md": CONFIGS_README,
            "en/train-0.jsonl": jsonl("hello"),
            "en/train-1.jsonl": jsonl("world"),
            "en/test.jsonl": jsonl("bye"),
            "fr/train.csv": "text\nbonjour\n",
            "fr/validation.csv": "text\nsalut\n",
        },
    )


def snapshot_dir(tmp_path: Path, repo_id: str, commit: str) -> Path:
    return tmp_path / "hf" / "hub" / f"datasets--{repo_id.replace('/', '--')}" / "snapshots" / commit


def downloads(hub: FakeHub) -> list[str]:
    return [r.path.split("/resolve/", 1)[1] for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]


def closed_port_url() -> str:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_default_subset_from_readme_configs(hub: FakeHub, configs: str, tmp_path: Path) -> None:
    snap = fetch_hub_dataset("tester/configs", "train")
    assert isinstance(snap, HubSnapshot) and snap.commit == configs
    root = snapshot_dir(tmp_path, "tester/configs", configs)
    assert snap.root == root  # the normal HF cache under HF_HOME, named after the commit
    assert snap.files == [root / "en" / "train-0.jsonl", root / "en" / "train-1.jsonl"]
    assert all(f.is_absolute() for f in snap.files) and snap.files[1].read_text() == jsonl("world")
    assert snap.manifest_entry() == {
        "repo_id": "tester/configs",
        "revision": None,
        "commit": configs,
        "subset": None,
        "split": "train",
        "files": ["en/train-0.jsonl", "en/train-1.jsonl"],
    }
    # Only the split's files (and the card, to read the configs) were downloaded: not the other subset's.
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "README.md",
        "en/train-0.jsonl",
        "en/train-1.jsonl",
    ]


def test_subset_split_and_conventions_inside_a_data_dir(hub: FakeHub, configs: str) -> None:
    snap = fetch_hub_dataset("tester/configs", "validation", subset="fr")
    assert [f.relative_to(snap.root).as_posix() for f in snap.files] == ["fr/validation.csv"]
    assert snap.subset == "fr" and snap.manifest_entry()["subset"] == "fr"
    test = fetch_hub_dataset("tester/configs", "test", subset="en")
    assert [f.name for f in test.files] == ["test.jsonl"] and test.commit == configs


def test_unknown_subset_or_split_lists_the_available_ones(hub: FakeHub, configs: str) -> None:
    with pytest.raises(ConfigError, match=r"no subset 'de'.*data_source\.subset to one of: en, fr"):
        fetch_hub_dataset("tester/configs", "train", subset="de")
    with pytest.raises(ConfigError, match=r"subset 'fr' has no split 'test'.*one of: train, validation"):
        fetch_hub_dataset("tester/configs", "test", subset="fr")
    with pytest.raises(ConfigError, match=r"has no split 'validation'; set data_source\.split to one of: train, test"):
        fetch_hub_dataset("tester/configs", "validation")
    assert downloads(hub) == [f"{configs}/README.md"]  # nothing but the card before the mistake was found

    no_default = CONFIGS_README.replace("  default: true\n", "")
    hub.add_dataset(
        "tester/configs",
        {"README.md": no_default, "en/train-0.jsonl": "", "en/test.jsonl": "", "fr/train.csv": "text\n"},
    )
    with pytest.raises(ConfigError, match=r"several subsets and no default; set data_source\.subset to one of: en, fr"):
        fetch_hub_dataset("tester/configs", "train")


def test_plain_files_revisions_and_the_cache(hub: FakeHub, tmp_path: Path) -> None:
    first = hub.add_dataset("tester/plain", {"train.jsonl": jsonl("v1"), "test.jsonl": jsonl("t")})
    snap = fetch_hub_dataset("tester/plain", "train")
    assert snap.commit == first and [f.name for f in snap.files] == ["train.jsonl"]
    assert snap.files[0].read_text() == jsonl("v1")
    assert [f.name for f in fetch_hub_dataset("tester/plain", "test").files] == ["test.jsonl"]

    second = hub.add_dataset("tester/plain", {"train.jsonl": jsonl("v2"), "test.jsonl": jsonl("t")})
    branch = hub.add_dataset("tester/plain", {"train.jsonl": jsonl("branch")}, revision="v1-fixes")
    latest = fetch_hub_dataset("tester/plain", "train")
    assert latest.commit == second and latest.files[0].read_text() == jsonl("v2")
    pinned = fetch_hub_dataset("tester/plain", "train", revision=first)
    assert pinned.commit == first and pinned.revision == first and pinned.files[0].read_text() == jsonl("v1")
    on_branch = fetch_hub_dataset("tester/plain", "train", revision="v1-fixes")
    assert on_branch.commit == branch and on_branch.files[0].read_text() == jsonl("branch")
    assert on_branch.manifest_entry()["revision"] == "v1-fixes" and on_branch.manifest_entry()["commit"] == branch

    before = len(downloads(hub))
    again = fetch_hub_dataset("tester/plain", "train", revision=first)
    assert again == pinned and len(downloads(hub)) == before  # a commit's files are downloaded once
    assert pinned.root == snapshot_dir(tmp_path, "tester/plain", first)


def test_parquet_shards_by_naming_convention(hub: FakeHub) -> None:
    commit = hub.add_dataset(
        "tester/parquet",
        {
            "data/train-00000-of-00002.parquet": parquet("a", "b"),
            "data/train-00001-of-00002.parquet": parquet("c"),
            "data/test-00000-of-00001.parquet": parquet("z"),
            "README.md": "# no configs, just a card\n",
        },
    )
    snap = fetch_hub_dataset("tester/parquet", "train")
    assert snap.commit == commit
    assert snap.manifest_entry()["files"] == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    assert [row for f in snap.files for row in pq.read_table(f).column("text").to_pylist()] == ["a", "b", "c"]


def test_unsupported_files_and_unreadable_card(hub: FakeHub) -> None:
    hub.add_dataset("tester/text", {"train.txt": "just lines\n"})
    with pytest.raises(DataError, match=r"split 'train' is made of \.txt files; loraops reads \.jsonl"):
        fetch_hub_dataset("tester/text", "train")
    hub.add_dataset("tester/card", {"README.md": "---\nconfigs: [\n---\n", "train.jsonl": jsonl("x")})
    with pytest.raises(LoraopsError, match=r"tester/card: `datasets` cannot read its layout at commit [0-9a-f]{12}"):
        fetch_hub_dataset("tester/card", "train")


def test_unknown_repo_private_repo_and_unknown_revision(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        LoraopsError,
        match=r"dataset tester/nope not found at http://127\.0\.0\.1:\d+: check "
        r"data_source\.repo_id; if it is private, the token in HF_TOKEN",
    ):
        fetch_hub_dataset("tester/nope", "train")

    commit = hub.add_dataset("tester/secret", {"train.jsonl": jsonl("s")}, private=True)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(LoraopsError, match="if it is private, set HF_TOKEN to a token that may read it"):
        fetch_hub_dataset("tester/secret", "train")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert fetch_hub_dataset("tester/secret", "train").commit == commit

    hub.add_dataset("tester/plain", {"train.jsonl": jsonl("x")})
    with pytest.raises(LoraopsError, match=r"tester/plain has no branch, tag or commit 'v9'.*data_source\.revision"):
        fetch_hub_dataset("tester/plain", "train", revision="v9")
    with pytest.raises(LoraopsError, match=r"has no branch, tag or commit '0{40}'"):
        fetch_hub_dataset("tester/plain", "train", revision="0" * 40)
    with pytest.raises(ConfigError, match="not a Hugging Face dataset id"):
        fetch_hub_dataset("../etc", "train")


def test_unreachable_hub_fails_fast_or_uses_the_cache(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    commit = hub.add_dataset("tester/plain", {"train.jsonl": jsonl("x")})
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    started = time.monotonic()
    with pytest.raises(LoraopsError) as failed:
        fetch_hub_dataset("tester/other", "train")
    assert time.monotonic() - started < 10
    message = str(failed.value)
    assert message.startswith("cannot reach http://127.0.0.1:") and "not in the local Hugging Face cache" in message
    assert "\n" not in message  # one line, as the CLI prints it before exiting with status 2

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    online = fetch_hub_dataset("tester/plain", "train")
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    assert fetch_hub_dataset("tester/plain", "train") == online  # the cached copy of the branch, with a warning
    assert online.commit == commit


def test_offline_mode_reads_only_the_cache(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_dataset(
        "tester/configs",
        {
            "README.md": CONFIGS_README,
            "en/train-0.jsonl": jsonl("a"),
            "en/test.jsonl": jsonl("b"),
            "fr/train.csv": "text\nc\n",
        },
    )
    online = fetch_hub_dataset("tester/configs", "train")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    count = len(hub.requests)
    assert fetch_hub_dataset("tester/configs", "train") == online
    with pytest.raises(
        LoraopsError,
        match=r"HF_HUB_OFFLINE is set and Hugging Face dataset tester/configs is only "
        r"partly in the local Hugging Face cache",
    ):
        fetch_hub_dataset("tester/configs", "train", subset="fr")  # never downloaded
    with pytest.raises(LoraopsError, match="HF_HUB_OFFLINE is set and Hugging Face dataset tester/other is not in"):
        fetch_hub_dataset("tester/other", "train")
    assert len(hub.requests) == count


def test_the_token_never_appears_in_messages(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hub.add_dataset("tester/plain", {"train.jsonl": jsonl("x"), "test.jsonl": jsonl("y")})
    messages = []

    def failure(*args: object, **kwargs: object) -> str:
        with pytest.raises(LoraopsError) as failed:
            fetch_hub_dataset(*args, **kwargs)  # type: ignore[arg-type]
        return str(failed.value)

    messages.append(failure("tester/nope", "train"))
    messages.append(failure("tester/plain", "validation"))
    messages.append(failure("tester/plain", "train", revision="v9"))
    hub.fail["dataset_info"] = (500, f"internal error for token {TOKEN}")  # a server that echoes the token
    messages.append(failure("tester/plain", "train"))
    hub.fail["dataset_file"] = (403, f"token {TOKEN} may not read this")
    messages.append(failure("tester/plain", "train"))
    monkeypatch.setenv("HF_TOKEN", TOKEN[:-1] + "Q")  # a wrong token
    messages.append(failure("tester/plain", "train"))
    assert "HTTP 500" in messages[3] and "HTTP 403" in messages[4] and "<redacted>" in messages[3] + messages[4]
    assert "rejected the token in HF_TOKEN" in messages[-1]
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    messages.append(failure("tester/nope", "train"))

    for message in messages:
        assert TOKEN not in message and TOKEN[:-1] not in message and "\n" not in message, message
    assert TOKEN not in caplog.text
    for request in hub.requests:  # the token travels in the Authorization header only
        assert TOKEN not in request.path and all(TOKEN not in v for v in request.headers.values())


def test_train_from_a_hub_dataset_records_its_commit(
    hub: FakeHub, tiny_overrides: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import CONFIGS, PC_RECORDS

    from loraops.config import TrainConfig, load_config
    from loraops.runs import RunDir
    from loraops.train import train

    questions = [{"question": r["prompt"], "answer": r["completion"]} for r in PC_RECORDS]
    commit = hub.add_dataset(
        "tester/qa", {"data/train-00000-of-00001.jsonl": "".join(json.dumps(q) + "\n" for q in questions)}
    )
    cfg = load_config(
        TrainConfig,
        CONFIGS,
        "train",
        tiny_overrides + ["data_source.type=hub", "data_source.repo_id=tester/qa", "max_steps=1"],
    )
    run = RunDir(train(cfg).run_dir)
    data = run.read_manifest().as_dict()["data"]
    assert data["source"]["type"] == "hub" and data["source"]["commit"] == commit
    assert data["source"]["repo_id"] == "tester/qa" and [f["name"] for f in data["files"]] == [
        "data/train-00000-of-00001.jsonl"
    ]
    assert run.read_metrics().as_dict()["data"]["formats"] == {"question_answer": 16}
    recorded = [p.read_bytes() for p in run.path.rglob("*") if p.is_file()] + [capsys.readouterr().err.encode()]
    assert not any(TOKEN.encode() in blob for blob in recorded)
