"""The speed benchmark runs JAX and MMAction2 on the same weights and clips and fills its table (timings themselves
are not asserted)."""

import subprocess
import sys

import pytest

HEADER = "| model | step | dtype | jax clips/s | eager clips/s | compile clips/s |"


def run(*args):
    return subprocess.run([sys.executable, "-m", "uniformer_jax.benchmark", *args],
                          capture_output=True, text=True, timeout=900)


def rows(stdout: str) -> list[dict]:
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert lines and lines[0].startswith(HEADER), stdout
    names = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(names, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[1:]]


@pytest.mark.slow
@pytest.mark.parametrize("steps,modes", [("inference,train", "eager"), ("inference", "compile")])
def test_benchmark_times_jax_and_pytorch_on_the_same_model(steps, modes):
    # torch.compile's train step is left out here: compiling it takes a minute even at 32x32.
    result = run("--models=s2", "--size=32", "--batch=2", "--train-batch=2", "--min-seconds=0",
                 "--peak-tflops=1,2", "--dtypes=float32", f"--steps={steps}", f"--torch={modes}")
    assert result.returncode == 0, result.stderr[-3000:]
    table = rows(result.stdout)
    assert [(r["model"], r["step"], r["dtype"]) for r in table] == [
        ("small 2", step, "float32") for step in steps.split(",")]
    for row in table:
        jax_speed, torch_speed = float(row["jax clips/s"]), float(row[f"{modes} clips/s"])
        assert jax_speed > 0 and torch_speed > 0, row
        assert float(row[f"jax/{modes}"]) == pytest.approx(jax_speed / torch_speed, rel=0.01)
        assert float(row["MFU jax"].rstrip("%")) > 0
        other = "compile" if modes == "eager" else "eager"
        assert row[f"{other} clips/s"] == "–"
    if modes == "compile":
        assert float(table[0]["compile s torch"]) > 0
    # Same weights, same uint8 clips, same normalisation: MMAction2's logits.
    assert float(table[0]["max Δlogit"]) < 1e-4


@pytest.mark.parametrize("args,message", [
    (["--models=s15"], "even frame count"),
    (["--models=l16"], "write s or b"),
    (["--torch=jit"], "--torch takes eager, compile"),
    (["--size=200"], "multiple of 32"),
])
def test_bad_arguments_are_refused(args, message):
    result = run(*args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "|" not in result.stdout
