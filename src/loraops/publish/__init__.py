"""Publishing a run: locally (artifacts/models/<run>/) or to the Hugging Face Hub, gated on `compare`."""

from __future__ import annotations

from loraops.publish.gate import GateError, NotEvaluatedError, NotImprovedError
from loraops.publish.hub import publish_hub
from loraops.publish.local import publish_local
from loraops.publish.stage import PublishResult

__all__ = ["GateError", "NotEvaluatedError", "NotImprovedError", "PublishResult", "publish_hub", "publish_local"]
