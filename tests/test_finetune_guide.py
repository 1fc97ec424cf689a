"""docs/finetune.md runs as written: its shell blocks, in order, in a fresh directory, starting from a random-weight
file in k400_s16's released form (a mirror stands in for the download)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import reference_model, save_sensex
from flax import traverse_util

from uniformer_jax.weights import hub, releases
from uniformer_jax.weights.checkpoints import load_directory

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "finetune.md"


def test_the_finetune_guide_runs_as_written(tmp_path):
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), re.S)
    assert len(blocks) >= 5
    work = tmp_path / "work"
    work.mkdir()
    for name in ("train.py", "eval.py", "configs"):  # a user's checkout
        (work / name).symlink_to(REPO / name)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    save_sensex(reference_model("uniformer_small", 400, 1e-6), mirror / releases.BY_NAME["k400_s16"].file)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # a link would lose the venv
    (bin_dir / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TFDS_DATA_DIR": str(tmp_path / "tfds"),
           hub.MIRROR_ENV: str(mirror), "TF_CPP_MIN_LOG_LEVEL": "1"}
    script = "set -euo pipefail\n" + "".join(f"echo '### block {i}'\n{block}" for i, block in enumerate(blocks))
    result = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    out = result.stdout
    assert "48 videos in 4 class folders under my_clips" in out
    assert "  train: 40 videos written, 0 skipped\n  validation: 8 videos written, 0 skipped" in out
    assert re.search(r"trained \d+ steps; model written to .*runs/finetune/model", out)
    assert re.search(r"trained \d+ steps; model written to .*runs/probe/model", out)

    _, start_vars = load_directory(hub.fetch("k400_s16"))
    tuned, tuned_vars = load_directory(work / "runs/finetune/model")
    _, probe_vars = load_directory(work / "runs/probe/model")
    assert tuned.num_classes == 4  # the dataset's, a new head
    flat_start = traverse_util.flatten_dict(start_vars)
    flat_probe = traverse_util.flatten_dict(probe_vars)
    flat_tuned = traverse_util.flatten_dict(tuned_vars)
    backbone = [k for k in flat_start if k[1] != "head"]
    assert all(np.array_equal(flat_probe[k], flat_start[k]) for k in backbone)  # the probe's frozen backbone
    assert not all(np.array_equal(flat_tuned[k], flat_start[k]) for k in backbone)  # fine-tuning moved it

    results = json.loads((work / "runs/finetune/eval/eval_results.json").read_text())
    assert results["videos"] == 8 and (results["clips"], results["crops"]) == (4, 1)  # k400_s16's protocol
    assert (work / "runs/finetune/config.json").is_file()  # train.py's, not overwritten by eval.py
    lines = out[out.index("my_clips/left/left_000.mp4"):].splitlines()
    assert len(lines) >= 5 and all(re.fullmatch(r"\s+\d+\.\d\d%\s+(left|right|up|down)", line) for line in lines[1:5])
