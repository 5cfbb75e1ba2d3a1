"""`loraops publish`: a staged run copied to <artifacts_dir>/models/<run>/, replacing an earlier copy atomically."""

from __future__ import annotations

import os
import shutil

from loraops.atomic import recover_folder_leftovers, swap_in_folder
from loraops.config import CompareConfig
from loraops.paths import LATEST_RUN, portable_path
from loraops.publish.record import record_publication
from loraops.publish.stage import PublishResult, admit, stage
from loraops.tracking.registry import Publication


def publish_local(
    model_path: str = LATEST_RUN,
    *,
    merged: bool = False,
    force: bool = False,
    compare_cfg: CompareConfig | None = None,
    gguf: bool = False,
    named_run: bool = True,
    follow_tracking: bool = False,
) -> PublishResult:
    """Copy a run's model, card and records to <artifacts_dir>/models/<run>/ and make it the reference.

    The artifacts folder, the metrics the gate reads and the reference record all come from `compare_cfg`.
    """
    run, compare_cfg, gate, exported = admit(model_path, compare_cfg, force, named_run, follow_tracking, gguf)
    dest = compare_cfg.published_dir / run.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    recover_folder_leftovers(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        files = stage(
            run,
            tmp,
            merged=merged,
            gate=gate,
            compare_cfg=compare_cfg,
            load_from=portable_path(dest),
            records=True,
            public=False,
            gguf=exported,
        )
        swap_in_folder(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-copied folder behind
        raise
    destination = f"local:{portable_path(dest)}"
    publication = Publication(dest, merged, gate.comparison, gate.forced, destination)
    reference = record_publication(run, publication, compare_cfg)
    return PublishResult.of(run, gate, publication, files, reference)
