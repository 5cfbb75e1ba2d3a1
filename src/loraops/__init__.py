"""loraops: LoRA fine-tuning of causal LMs, from data to a published adapter."""

from importlib import metadata

try:
    __version__ = metadata.version("loraops")
except metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"
