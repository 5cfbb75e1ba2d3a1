"""Training files from one split of a Hugging Face Hub dataset repository, pinned to one commit.

huggingface_hub downloads into its normal cache (HF_HOME / HF_HUB_CACHE), where `datasets`, `hf download`
and later runs find the files again; the snapshot folder is named after the commit every file was read at,
which is what a run's manifest records to fetch exactly the same data again.

Which files make up a split (and subset) is decided by `datasets` itself, so README.md `configs:` and the
file naming conventions (train.jsonl, data/train-00000-of-00001.parquet, <subset>/train.csv, ...) mean here
what they mean in `load_dataset` and on the Hub's dataset viewer. It decides on the repository's file list
alone, before any data file is downloaded: only the asked-for split's files are fetched, not every subset's.

The token comes from HF_TOKEN (or `hf auth login`) and is read by huggingface_hub itself; messages are
scrubbed of it all the same, as a server may echo it back.
"""

from __future__ import annotations

import glob
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from loraops import hf
from loraops.data.files import DATA_SUFFIXES
from loraops.errors import ConfigError, DataError, LoraopsError

log = logging.getLogger(__name__)

# What `datasets` reads, besides the file list, to find configs and splits; all are small. The other
# files only need to exist by name for that, so they are not downloaded before they are known to be needed.
METADATA_FILES = ("README.md", ".huggingface.yaml", "dataset_infos.json")


@dataclass(frozen=True)
class HubSnapshot:
    """The files of one split of a Hub dataset, as fetched from one commit."""

    repo_id: str
    revision: str | None  # as asked for: branch, tag, commit, or None for the default branch
    commit: str  # what `revision` resolved to; every file was read at this commit
    subset: str | None  # as asked for: None is the dataset's default subset
    split: str
    root: Path  # the snapshot folder in the Hugging Face cache
    files: list[Path]  # the split's data files, sorted, under `root`

    def manifest_entry(self) -> dict[str, Any]:
        """What a run manifest needs to fetch exactly the same data again."""
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "subset": self.subset,
            "split": self.split,
            "files": [f.relative_to(self.root).as_posix() for f in self.files],
        }


def fetch_hub_dataset(repo_id: str, split: str, revision: str | None = None, subset: str | None = None) -> HubSnapshot:
    """Download the data files of `split` (of `subset`) of dataset `repo_id` at `revision` into the HF cache.

    Files already cached for the commit are not downloaded again. With HF_HUB_OFFLINE=1, or when the Hub
    cannot be reached within seconds, only the cache is used. Raises ConfigError for an unknown subset or
    split, LoraopsError for an unknown or unreadable repository or revision, an unreachable Hub or an
    unwritable cache, DataError when the split has no data files loraops can read.
    """
    _check_args(repo_id, split, revision, subset)
    endpoint, cache, offline = hf.endpoint(), hf.cache_dir(), hf.offline()
    # Checked first: without it an unreachable Hub costs a minute of retries, as in models._hub_model.
    unreachable = not offline and not hf.reachable(endpoint)
    if unreachable:
        log.warning("%s cannot be reached: looking for dataset %s in the local cache %s", endpoint, repo_id, cache)
    where = hf.Access(
        name=f"Hugging Face dataset {repo_id}",
        repo_url=f"{endpoint}/datasets/{repo_id}",
        check="data_source.repo_id",
        revision=revision,
        revision_key="data_source.revision",
        offline=offline,
        unreachable=unreachable,
    )
    download = _Downloader(repo_id, endpoint, cache, local_only=offline or unreachable)
    # 1. resolve the revision to a commit, and fetch what `datasets` reads to find the splits
    with hf.translated_errors(where):
        meta_root = download(revision, list(METADATA_FILES))
    commit = meta_root.name
    # 2. which files make up the split, decided on the commit's file list
    wanted = _split_files(repo_id, commit, meta_root, _repo_files(repo_id, commit, meta_root, cache), subset, split)
    # 3. those files only, at the commit (not the revision, which may have moved since step 1)
    with hf.translated_errors(where):
        root = download(commit, [glob.escape(path) for path in wanted])
    files = [root.joinpath(*path.split("/")) for path in wanted]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise LoraopsError(
            f"Hugging Face dataset {repo_id}: {len(missing)} files of split {split!r} are missing "
            f"from the cache after download ({missing[0]}, ...); run again"
        )
    log.info(
        "Hugging Face dataset %s split %s: %d files at commit %s in %s", repo_id, split, len(files), commit[:12], root
    )
    return HubSnapshot(
        repo_id=repo_id, revision=revision, commit=commit, subset=subset, split=split, root=root, files=files
    )


def _check_args(repo_id: str, split: str, revision: str | None, subset: str | None) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ConfigError(f"data_source.repo_id {repo_id!r} is not a Hugging Face dataset id (OWNER/NAME)") from None
    if not split or not split.strip():
        raise ConfigError("data_source.split is empty: name the split to train on (e.g. train)")
    for key, value in (("revision", revision), ("subset", subset)):
        if value is not None and not value.strip():
            raise ConfigError(f"data_source.{key} is empty: name one, or leave it out")


@dataclass(frozen=True)
class _Downloader:
    repo_id: str
    endpoint: str
    cache: Path
    local_only: bool

    def __call__(self, revision: str | None, patterns: list[str]) -> Path:
        """The snapshot folder of `revision` with the repository files matching `patterns` in it."""
        from huggingface_hub import snapshot_download

        with _quiet_no_match():
            return Path(
                snapshot_download(
                    self.repo_id,
                    repo_type="dataset",
                    revision=revision,
                    allow_patterns=patterns,
                    cache_dir=self.cache,
                    endpoint=self.endpoint,
                    local_files_only=self.local_only,
                )
            )


@contextmanager
def _quiet_no_match() -> Iterator[None]:
    """Hide huggingface_hub's "No files matched" warning: most repositories lack some metadata file, as expected."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No files matched")

    logger = logging.getLogger("huggingface_hub._snapshot_download")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _repo_files(repo_id: str, commit: str, meta_root: Path, cache: Path) -> list[str]:
    """All file paths of the repository at `commit`, from the listing huggingface_hub cached in step 1."""
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    try:
        listing = get_cached_repo_tree(repo_id, repo_type="dataset", revision=commit, cache_dir=cache)
        return sorted(f.path for f in listing)
    except CachedRepoTreeNotFoundError:
        # A snapshot cached by another tool, or an older huggingface_hub, used offline: what is on disk is all there is.
        log.warning("no cached file list for dataset %s at %s: using the files in %s", repo_id, commit[:12], meta_root)
        return sorted(p.relative_to(meta_root).as_posix() for p in meta_root.rglob("*") if p.is_file())


def _split_files(
    repo_id: str, commit: str, meta_root: Path, repo_files: list[str], subset: str | None, split: str
) -> list[str]:
    """The repository paths of the split's data files, sorted, as `datasets` resolves them.

    `datasets` runs on a stand-in of the repository: its metadata files as downloaded, every other file
    empty, which is all it looks at to resolve configs and splits.
    """
    try:
        with tempfile.TemporaryDirectory(prefix="loraops-hub-") as tmp:
            stand_in = Path(tmp).resolve() / "repo"
            _build_stand_in(stand_in, meta_root, repo_files)
            # The builder writes a lock file in its cache folder: a throwaway one keeps the user's clean.
            resolved = _resolve_split(_Dataset(repo_id, commit, subset), stand_in, split, Path(tmp) / "datasets-cache")
            relative = sorted({_relative(path, stand_in) for path in resolved}, key=lambda p: p.split("/"))
    except OSError as exc:  # only the stand-in's own writes: `datasets`' errors are translated inside
        raise LoraopsError(f"cannot write a temporary folder ({tempfile.gettempdir()}): {hf.first_line(exc)}") from None
    unsupported = sorted({PurePosixPath(p).suffix or p for p in relative if not p.endswith(DATA_SUFFIXES)})
    if unsupported:
        raise DataError(
            f"hf://datasets/{repo_id}@{commit}",
            None,
            f"split {split!r} is made of {', '.join(unsupported)} files; loraops reads {', '.join(DATA_SUFFIXES)}",
        )
    return relative


def _build_stand_in(stand_in: Path, meta_root: Path, repo_files: list[str]) -> None:
    for path in repo_files:
        parts = path.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise LoraopsError(f"the repository lists a file {path!r} whose path cannot be used safely")
        dest = stand_in.joinpath(*parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        source = meta_root.joinpath(*parts)
        if path in METADATA_FILES and source.is_file():
            shutil.copyfile(source, dest)
        else:
            dest.touch()


@dataclass(frozen=True)
class _Dataset:
    repo_id: str
    commit: str
    subset: str | None

    @property
    def name(self) -> str:
        return f"Hugging Face dataset {self.repo_id}" + (f" subset {self.subset!r}" if self.subset else "")


def _resolve_split(dataset: _Dataset, folder: Path, split: str, cache_dir: Path) -> list[str]:
    """Local paths of the split's files under `folder`, from `datasets`' own rules."""
    import datasets
    import yaml
    from datasets.exceptions import DatasetsError

    path = str(folder)
    try:
        _check_subset(dataset, path)
        builder = datasets.load_dataset_builder(path, name=dataset.subset, cache_dir=str(cache_dir))
    except (DatasetsError, FileNotFoundError) as exc:  # no data files at all; EmptyDatasetError is a FileNotFoundError
        at = f"hf://datasets/{dataset.repo_id}@{dataset.commit}"
        raise DataError(at, None, f"no data files that `datasets` recognises ({hf.first_line(exc)})") from None
    except (ValueError, TypeError, KeyError, yaml.YAMLError) as exc:
        # README.md front matter that is not YAML, `configs:` that `datasets` rejects, mixed formats across splits...
        raise LoraopsError(
            f"{dataset.name}: `datasets` cannot read its layout at commit {dataset.commit[:12]}: "
            f"{type(exc).__name__}: {hf.first_line(exc)}"
        ) from None
    # Keys are NamedSplit for the naming conventions, str for README configs: compare them as str.
    data_files = {str(name): files for name, files in (builder.config.data_files or {}).items()}
    if split not in data_files:
        available = ", ".join(data_files) or "none"
        raise ConfigError(f"{dataset.name} has no split {split!r}; set data_source.split to one of: {available}")
    return [str(f) for f in data_files[split]]


def _check_subset(dataset: _Dataset, path: str) -> None:
    """The subset exists, or none is named and the dataset has a default one."""
    import datasets

    subsets = datasets.get_dataset_config_names(path)  # ["default"] when the card declares no configs
    choose = f"set data_source.subset to one of: {', '.join(subsets)}"
    if dataset.subset is not None and dataset.subset not in subsets:
        raise ConfigError(
            f"Hugging Face dataset {dataset.repo_id} has no subset {dataset.subset!r} "
            f"(at commit {dataset.commit[:12]}); {choose}"
        )
    if dataset.subset is None and len(subsets) > 1 and datasets.get_dataset_default_config_name(path) is None:
        raise ConfigError(f"Hugging Face dataset {dataset.repo_id} has several subsets and no default; {choose}")


def _relative(local: str, folder: Path) -> str:
    return Path(local).resolve().relative_to(folder).as_posix()
