"""One rule for Hugging Face access: endpoint, cache folder, offline switch and token, read when needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from loraops import hf
from loraops.errors import LoraopsError

CACHE_VARIABLES = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_HOME")


def test_the_cache_folder_follows_huggingface_hub_and_the_legacy_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    from huggingface_hub import constants

    assert hf.cache_dir() == Path(constants.HF_HUB_CACHE)
    monkeypatch.setenv("HF_HOME", "/data/hf-home")
    assert hf.cache_dir() == Path("/data/hf-home/hub")
    monkeypatch.setenv("TRANSFORMERS_CACHE", "/data/hf-legacy")  # transformers 5 no longer reads it; loraops does
    assert hf.cache_dir() == Path("/data/hf-legacy")
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", "/data/hub-legacy")
    assert hf.cache_dir() == Path("/data/hub-legacy")
    monkeypatch.setenv("HF_HUB_CACHE", "/data/hub")  # the current variable wins
    assert hf.cache_dir() == Path("/data/hub") and hf.load_kwargs() == {"cache_dir": "/data/hub"}


@pytest.mark.parametrize(
    ("value", "offline"),
    [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("", False), ("no", False)],
)
def test_one_offline_switch(monkeypatch: pytest.MonkeyPatch, value: str, offline: bool) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hf.offline() is offline


def test_endpoint_and_token_are_read_when_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert hf.endpoint() == "https://huggingface.co"
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    assert hf.endpoint() == "http://127.0.0.1:9"
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert hf.token() is None
    with pytest.raises(LoraopsError, match="no Hugging Face token: set HF_TOKEN"):
        hf.require_token()
    monkeypatch.setenv("HF_TOKEN", "  hf_from_the_environment  ")
    assert hf.token() == "hf_from_the_environment" == hf.require_token()
