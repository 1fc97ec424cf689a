"""The input benchmark command runs end to end and prints its table (timings themselves are not asserted)."""

import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_input_benchmark_prints_four_rows(tmp_path):
    result = subprocess.run([sys.executable, "-m", "uniformer_jax.input_benchmark", f"--workdir={tmp_path}",
                             "--videos=2", "--clips=8", "--num_frames=8"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if re.search(r"\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\d$", line)]
    assert len(rows) == 4, result.stdout
