"""The README's demo, end to end: training learns what no single frame shows, and eval.py measures it."""

from __future__ import annotations

import json

from uniformer_jax import demo


def test_demo_learns_the_direction_of_motion(tmp_path, capfd):
    demo.main(["--workdir", str(tmp_path)])
    results = json.loads((tmp_path / "run" / "eval" / "eval_results.json").read_text())
    assert results["videos"] == 40 and results["top1"] >= 95.0, results
    out = capfd.readouterr().out  # the steps are subprocesses writing to the same stdout
    predictions = out[out.index("5. predict"):].splitlines()
    # Each video's block: its path, then the classes by probability; the first must be its own direction.
    for video, direction in (("left_000.mp4", "left"), ("up_000.mp4", "up")):
        at = next(i for i, line in enumerate(predictions) if line.endswith(video))
        assert predictions[at + 1].split()[-1] == direction, out[-2000:]
