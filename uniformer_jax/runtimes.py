"""Exported programs run in their own runtimes: jax (StableHLO), onnxruntime (ONNX), the LiteRT interpreter.

Nothing here needs the model's code: this is what a deployment does with the file and its sidecar.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np


class ExportedFileError(ValueError):
    """An exported file or sidecar that is missing or unreadable."""


def read_sidecar(path: str | Path) -> dict:
    """The sidecar `path`.json written beside an exported program.

    Args:
      path: the exported program.

    Returns:
      The sidecar's fields (`exporting.sidecar`).

    Raises:
      ExportedFileError: the program or its sidecar is missing, or the sidecar is not JSON.
    """
    path = Path(path)
    side = Path(f"{path}.json")
    if not path.is_file():
        raise ExportedFileError(f"{path} does not exist: name a file python -m uniformer_jax.export wrote")
    try:
        return json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ExportedFileError(f"cannot read {side}, the sidecar export writes beside {path.name}: {e}") from None


def load(path: str | Path, threads: int | None = None) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """An exported program as a function of uint8 clips, in the runtime its format runs in.

    Args:
      path: a file `python -m uniformer_jax.export` wrote (its sidecar beside it).
      threads: CPU threads for onnxruntime and LiteRT; None: theirs by default.

    Returns:
      `run(video (B, T, H, W, 3) uint8) -> (B, K) float32 logits`, and the runtime's name and version.

    Raises:
      ExportedFileError: a missing or unreadable file.
    """
    meta = read_sidecar(path)
    fmt = meta["format"]
    try:
        if fmt == "stablehlo":
            return _stablehlo(path)
        if fmt == "onnx":
            return _onnx(path, meta, threads)
        return _litert(path, threads)
    except ExportedFileError:
        raise
    except Exception as e:  # each runtime has its own error types for a damaged file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ExportedFileError(f"{fmt} cannot load {path}: {first}") from None


def _stablehlo(path):
    import jax

    exported = jax.export.deserialize(bytearray(Path(path).read_bytes()))
    return (lambda video: np.asarray(exported.call(video))), f"jax {jax.__version__}"


def _onnx(path, meta, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = meta["input"]["name"]
    return (lambda video: session.run(None, {name: video})[0]), f"onnxruntime {ort.__version__}"


def _litert(path, threads):
    from importlib.metadata import version

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    source, result = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run(video):
        interpreter.set_tensor(source["index"], video)
        interpreter.invoke()
        return interpreter.get_tensor(result["index"])

    return run, f"ai-edge-litert {version('ai-edge-litert')}"
