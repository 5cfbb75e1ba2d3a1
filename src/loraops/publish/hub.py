"""`loraops publish-hf`: upload a run's adapter (or merged model), tokenizer and card to the Hugging Face Hub.

The token is passed to huggingface_hub and nowhere else: it is never logged, printed, written to a
file or kept in an exception (every message is scrubbed of it, and library errors are re-raised
without their context, which holds the request and its headers).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from loraops import hf
from loraops.config import CompareConfig
from loraops.errors import LoraopsError
from loraops.paths import LATEST_RUN
from loraops.publish.record import record_publication
from loraops.publish.stage import PublishResult, admit, stage
from loraops.tracking.registry import Publication

log = logging.getLogger(__name__)

# Files an earlier publish to the repository may have left that this one does not replace
# (an adapter's files after a merged publish, a shard count that changed); other files are kept.
STALE_MODEL_FILES = ["*.safetensors", "*.bin", "*.json", "*.jinja", "*.model", "*.txt", "*.gguf", "Modelfile*"]


def hub_repo_id(repo_id: str | None) -> str:
    """--repo, else HF_REPO_ID; checked locally so a typo fails before any work."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo = repo_id or os.environ.get("HF_REPO_ID", "").strip()
    if not repo:
        raise LoraopsError("no Hub repository: pass --repo OWNER/NAME or set HF_REPO_ID")
    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise LoraopsError(f"repository {repo!r} is not a valid Hub repo id: {exc}") from None
    if "/" not in repo:  # the card names the repository before the Hub could tell us the owner
        raise LoraopsError(f"repository {repo!r}: give it as OWNER/NAME")
    return repo


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub raises for a failed request or a response it cannot use."""
    from huggingface_hub.errors import HfHubHTTPError

    return (HfHubHTTPError, *hf.connection_errors(), OSError, ValueError)


def _access(repo_id: str, endpoint: str) -> hf.Access:
    return hf.Access(
        name=f"Hub repository {repo_id}",
        repo_url=f"{endpoint}/{repo_id}",
        check="--repo (or HF_REPO_ID)",
        writing=True,
        endpoint=endpoint,
    )


def _check_visibility(api: Any, repo_id: str, public: bool) -> None:
    """create_repo leaves an existing repository's visibility alone, so never upload into a surprise."""
    private = api.repo_info(repo_id).private
    if private is False and not public:
        raise LoraopsError(f"repository {repo_id} exists and is public; pass --public to publish to it anyway")
    if private and public:
        log.warning("repository %s exists and is private; it stays private (change that on the Hub)", repo_id)


def upload(folder: Path, repo_id: str, *, public: bool, token: str, endpoint: str, message: str) -> str:
    """Create the repository if needed and commit `folder` to it; returns the full repo id."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    try:
        repo = api.create_repo(repo_id, private=not public, exist_ok=True).repo_id
        _check_visibility(api, repo, public)
        api.upload_folder(repo_id=repo, folder_path=folder, commit_message=message, delete_patterns=STALE_MODEL_FILES)
    except LoraopsError:
        raise
    except Exception as exc:
        # LFS uploads wrap the HTTP error in a RuntimeError, and hf_xet raises RuntimeErrors of its
        # own; anything else is a bug and stays one.
        inner = exc.__cause__
        cause = inner if isinstance(exc, RuntimeError) and isinstance(inner, _hub_errors()) else exc
        if not isinstance(cause, (*_hub_errors(), RuntimeError)):
            raise
        why = hf.describe(cause, _access(repo_id, endpoint), token)
        # `from None`: the original exception holds the request, Authorization header included. Files only
        # become visible with the commit that names them, and unchanged files are skipped: a retry is safe.
        raise LoraopsError(
            f"publishing to {repo_id} failed: {why}. A retry is safe and sends only what is missing: run it again."
        ) from None
    return repo


def publish_hub(
    model_path: str = LATEST_RUN,
    *,
    repo_id: str | None = None,
    public: bool = False,
    merged: bool = False,
    force: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    compare_cfg: CompareConfig | None = None,
    gguf: bool = False,
    named_run: bool = True,
    follow_tracking: bool = False,
) -> PublishResult:
    """Upload a run to the Hub (private unless `public`) and make it the reference for `compare`.

    `token` and `endpoint` default to HF_TOKEN (or huggingface_hub's stored login) and HF_ENDPOINT.
    """
    repo, secret = hub_repo_id(repo_id), hf.require_token(token)  # before any work
    url_root = (endpoint or hf.endpoint()).rstrip("/")
    run, compare_cfg, gate, exported = admit(model_path, compare_cfg, force, named_run, follow_tracking, gguf)
    # Staged beside the artifacts rather than in /tmp: a merged 8B model is 16 GB.
    Path(compare_cfg.artifacts_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=compare_cfg.artifacts_dir, prefix=".hub-staging-") as tmp:
        folder = Path(tmp) / run.name
        files = stage(
            run,
            folder,
            merged=merged,
            gate=gate,
            compare_cfg=compare_cfg,
            load_from=repo,
            records=False,
            public=True,
            gguf=exported,
        )
        visibility = "public" if public else "private"
        log.info("uploading %d files of %s to %s (%s)", len(files), run.name, repo, visibility)
        message = f"loraops: publish run {run.name}"
        repo = upload(folder, repo, public=public, token=secret, endpoint=url_root, message=message)
        url, destination = f"{url_root}/{repo}", f"hf:{repo}"
        published = Publication(folder, merged, gate.comparison, gate.forced, destination, url)
        reference = record_publication(run, published, compare_cfg)  # a merged model is logged from `folder`
    return PublishResult.of(run, gate, published, files, reference)
