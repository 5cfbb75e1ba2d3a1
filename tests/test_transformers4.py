"""Published folders load on transformers 4.x too: many serving stacks still pin it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import compare_cfg, evaluated, finished_run

from loraops.loading import load_tokenizer
from loraops.publish import publish_local

TRANSFORMERS_4 = "transformers==4.57.6"
PROBE = """import json, sys
from transformers import AutoTokenizer
t = AutoTokenizer.from_pretrained(sys.argv[1])
messages = [{"role": "user", "content": "Rolling sum of A1:A9"}]
text = t.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
print(json.dumps({"text": text, "ids": t(text, add_special_tokens=False).input_ids, "eos": t.eos_token}))"""


@pytest.mark.slow
def test_a_published_tokenizer_loads_on_transformers_4(tmp_path: Path, tiny_adapter_dir: Path) -> None:
    run = finished_run(tmp_path, "r1", tiny_adapter_dir)
    evaluated(tmp_path, run, 80.0, 0.0)
    published = publish_local(str(run), compare_cfg=compare_cfg(tmp_path)).path
    assert published is not None
    venv = tmp_path / "transformers4"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = [venv / "bin" / "pip", "install", "--quiet", TRANSFORMERS_4, "jinja2"]  # tokenizers only: no torch
    assert subprocess.run(pip, capture_output=True, text=True).returncode == 0
    done = subprocess.run([venv / "bin" / "python", "-c", PROBE, published], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    old = json.loads(done.stdout.splitlines()[-1])

    new = load_tokenizer(str(published))
    messages = [{"role": "user", "content": "Rolling sum of A1:A9"}]
    text = new.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert old == {"text": text, "ids": new(text, add_special_tokens=False).input_ids, "eos": new.eos_token}
