"""The README's demo runs end to end."""

from __future__ import annotations

import pytest

from uniformer_jax import demo


@pytest.mark.slow
def test_demo(tmp_path, capsys):
    demo.main(["--workdir", str(tmp_path), "--frames", "8"])
    out = capsys.readouterr().out
    assert "bit-exact: True" in out
    assert out.count("class_") >= 5
