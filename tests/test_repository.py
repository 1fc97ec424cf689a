"""The repository as a newcomer meets it: the README's commands, lint, the import layers, and docs whose
commands name programs, flags and config fields that exist."""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAGES = [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md"))]
# The commands the docs show that take seconds and need no data, network or weights: run as written.
CHEAP = {("-m", "uniformer_jax.zoo", "list"), ("-m", "uniformer_jax.labels")}
SUBCOMMANDS = {"uniformer_jax.zoo": ("list", "fetch")}
TORCH = ("torch", "mmaction", "mmcv", "mmengine")


def readme_commands() -> list[str]:
    return [line.strip() for line in (REPO / "README.md").read_text().splitlines()[:12]
            if line.startswith("    python3 -m venv")]


def test_readme_opens_with_demo_and_test_commands():
    demo, tests = readme_commands()
    assert demo.endswith("python -m uniformer_jax.demo") and " -e . " in demo
    assert "'.[test]'" in tests and "python -m pytest" in tests


def test_ci_runs_the_readme_test_command():
    assert readme_commands()[1] in (REPO / ".ci" / "run").read_text().splitlines()


def test_readme_fits_the_first_screens():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


def test_ruff_finds_nothing():
    result = subprocess.run([BIN / "ruff", "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_imports_point_one_way():
    result = subprocess.run([BIN / "lint-imports", "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and "0 broken" in result.stdout, result.stdout + result.stderr


def test_every_subpackage_says_what_it_holds_and_may_import():
    for init in (REPO / "uniformer_jax").glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "Imports:" in doc or "import" in doc.lower(), init


def shown_commands() -> list[tuple[str, list[str]]]:
    """(page, argv after `python`) of every `python ...` command in the pages' shell blocks and indented lines."""
    commands = []
    for page in PAGES:
        text = page.read_text()
        # Shell blocks, and commands indented as code (with their continuation lines).
        blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
        blocks += re.findall(r"^    (python3? (?:.*\\\n)*.*)$", text, re.M)
        for block in blocks:
            for line in block.replace("\\\n", " ").splitlines():
                for part in line.split("&&"):
                    words = shlex.split(part, comments=True)
                    while words and "=" in words[0]:  # VAR=value before the command
                        words.pop(0)
                    if words and words[0] in ("python", ".venv/bin/python"):
                        commands.append((page.name, words[1:]))
    return commands


def program(argv: list[str]) -> tuple[str, ...]:
    """The program of a command: ('-m', module[, subcommand]) or (script,)."""
    if argv[0] == "-m":
        sub = SUBCOMMANDS.get(argv[1], ())
        return ("-m", argv[1], argv[2]) if len(argv) > 2 and argv[2] in sub else ("-m", argv[1])
    return (argv[0],)


def imported(importtime: str) -> set[str]:
    """The top-level packages `python -X importtime` reports."""
    return {line.split("|")[-1].strip().split(".")[0] for line in importtime.splitlines() if line.startswith("import")}


@functools.cache
def help_text(prog: tuple[str, ...]) -> tuple[str, set[str]]:
    """The program's flags as `--helpfull` (absl, which exits 1 after it) or `--help` (argparse) lists them, and
    the packages it imported to get there: everything a run imports before it starts working."""
    for flag, status in (("--helpfull", 1), ("--help", 0)):
        result = subprocess.run([sys.executable, "-X", "importtime", *prog, flag], cwd=REPO, capture_output=True,
                                text=True)
        if result.returncode == status and "--" in result.stdout:
            return result.stdout, imported(result.stderr)
    raise AssertionError(f"{' '.join(prog)} --help failed: {result.stderr[-2000:]}")


def config_fields(path: str) -> set[str]:
    spec = importlib.util.spec_from_file_location("shown_config", REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fields = set()

    def walk(node, prefix):
        for key in node.keys():
            fields.add(prefix + key)
            if hasattr(node[key], "keys"):
                walk(node[key], f"{prefix}{key}.")

    walk(module.get_config(), "")
    return fields


def test_docs_commands_name_programs_flags_and_config_fields_that_exist_and_load_no_torch():
    commands = shown_commands()
    assert len(commands) > 20 and {page for page, _ in commands} >= {"README.md", "training.md", "pods.md"}
    for page, argv in commands:
        prog = program(argv)
        if prog[0] == "-m":
            assert importlib.util.find_spec(prog[1]) is not None, (page, argv)
        else:
            assert (REPO / prog[0]).is_file(), (page, argv)
        if prog[-1] != "pytest":
            text, packages = help_text(prog)
            if "benchmark" not in prog[-1]:  # the benchmarks compare with PyTorch; the user commands need none
                assert not packages & set(TORCH), (page, argv, packages & set(TORCH))
        flags = [w.split("=")[0] for w in argv if w.startswith("--")]
        config = next((w.split("=", 1)[1] if "=" in w else argv[argv.index(w) + 1]
                       for w in argv if w.split("=")[0] == "--config"), None)
        if config and Path(config).stem.isupper():  # a placeholder, as BENCHMARKS.md's `configs/CONFIG.py`
            config = None
        for flag in flags:
            if flag.startswith("--config."):
                assert config and flag.removeprefix("--config.") in config_fields(config), (page, argv, flag)
            elif flag != "--":
                name = re.escape(flag.removeprefix("--"))  # absl lists booleans as --[no]NAME
                assert re.search(rf"(^|\s)--(\[no\])?{name}[\s=,:\]]", text, re.M), (page, argv, flag)
        if config:
            assert (REPO / config).is_file(), (page, argv)
    shown = {program(argv)[-1] for _, argv in commands}
    assert shown >= {"eval.py", "train.py", "convert", "uniformer_jax.predict", "uniformer_jax.dataset_builder",
                     "uniformer_jax.aot", "uniformer_jax.demo", "uniformer_jax.labels", "list", "fetch"}, shown


def test_cheap_docs_commands_run_as_written_and_load_no_torch():
    ran = 0
    for page, argv in shown_commands():
        if program(argv) in CHEAP:
            result = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=REPO, capture_output=True,
                                    text=True)
            assert result.returncode == 0 and result.stdout, (page, argv, result.stderr[-2000:])
            assert not imported(result.stderr) & set(TORCH), (page, argv)
            ran += 1
    assert ran >= 2


def test_docs_python_examples_import_what_they_use():
    for page in PAGES:
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
            tree = ast.parse(block)
            names = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module.startswith("uniformer_jax"):
                    module = importlib.import_module(node.module)
                    for alias in node.names:
                        names[alias.asname or alias.name] = getattr(module, alias.name, None) or \
                            importlib.import_module(f"{node.module}.{alias.name}")
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in names:
                    assert hasattr(names[node.value.id], node.attr), (page.name, node.value.id, node.attr)


def test_importing_the_package_loads_no_torch():
    code = "import sys, uniformer_jax; print(sorted({m.split('.')[0] for m in sys.modules}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert not set(ast.literal_eval(result.stdout.strip().splitlines()[-1])) & set(TORCH)


def test_docs_links_lead_to_files():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), (page.name, target)
