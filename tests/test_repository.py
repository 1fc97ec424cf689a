"""The README's commands are the ones CI and newcomers run."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    return [line.strip() for line in (REPO / "README.md").read_text().splitlines()[:12]
            if line.startswith("    python3 -m venv")]


def test_readme_opens_with_demo_and_test_commands():
    demo, tests = readme_commands()
    assert demo.endswith("python -m uniformer_jax.demo") and " -e . " in demo
    assert "'.[test]'" in tests and "python -m pytest" in tests


def test_ci_runs_the_readme_test_command():
    assert readme_commands()[1] in (REPO / ".ci" / "run").read_text().splitlines()
