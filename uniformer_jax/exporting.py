"""A converted checkpoint as a file that runs without this project: StableHLO, ONNX or LiteRT.

Every exported program takes uint8 RGB clips `(B, T, H, W, 3)`, normalises them inside and returns float32 logits
`(B, K)`. How each format is made:

- `stablehlo`: `jax.export`'s serialised program, lowered for each of `platforms` (the CPU one keeps the CPU form
  of the depthwise convolutions); any jax loads it with `jax.export.deserialize`. The batch may be symbolic.
- `tflite`: the same StableHLO traced in the portable form (`models.backends.portable`: 2D depthwise
  convolutions, no platform branch), re-serialised at the StableHLO version TensorFlow's LiteRT converter reads
  (`LITERT_STABLEHLO`), wrapped in a TensorFlow function by jax2tf and converted to a LiteRT flatbuffer,
  optionally with dynamic-range int8 weights.
- `onnx`: that LiteRT file converted by tf2onnx. jax2onnx, the direct route, converts no 3D convolution and no
  platform branch, and its releases since 0.13 require an orbax-checkpoint older than this project's.

A sidecar `OUT.json` says what the program expects (`sidecar`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from uniformer_jax import console
from uniformer_jax.models.backends import portable
from uniformer_jax.models.layers import MEAN, STD, normalise
from uniformer_jax.weights.checkpoints import load_directory, read_metadata
from uniformer_jax.weights.conversion import sha256

FORMATS = ("stablehlo", "onnx", "tflite")
PLATFORMS = ("cpu", "cuda", "tpu")
DTYPES = ("float32", "bfloat16")
# TF 2.21's LiteRT converter reads StableHLO up to 1.13.7; jax 0.10 writes newer by default.
LITERT_STABLEHLO = "1.13.7"
ONNX_OPSET = 18
INPUT, OUTPUT = "video", "logits"


class ExportError(ValueError):
    """A combination a format cannot hold, or a converter that refused the model."""


@dataclasses.dataclass(frozen=True)
class Target:
    """What to export: the format, batch (None: symbolic where the format allows it), compute dtype, the
    StableHLO platforms and LiteRT's weight quantisation (None or "int8")."""

    format: str
    batch: int | None = None
    dtype: str = "float32"
    platforms: tuple[str, ...] = PLATFORMS
    quantize: str | None = None

    def check(self) -> None:
        """Raises ExportError, one line naming the limit, for a combination the format cannot hold."""
        if self.format not in FORMATS:
            raise ExportError(f"--format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        if self.dtype not in DTYPES:
            raise ExportError(f"--dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if self.batch is not None and self.batch < 1:
            raise ExportError(f"--batch must be at least 1, got {self.batch}")
        if self.quantize not in (None, "int8"):
            raise ExportError(f"--quantize takes int8 only, not {self.quantize!r}")
        if self.quantize and self.format != "tflite":
            raise ExportError(f"--quantize int8 is LiteRT's dynamic-range quantisation: use --format tflite, "
                              f"not {self.format}")
        if self.format != "stablehlo" and self.dtype == "bfloat16":
            raise ExportError(f"{self.format} files run float32 only (LiteRT's CPU kernels have no bfloat16, and the "
                              "ONNX file is converted from LiteRT's): use --dtype float32, or --format stablehlo")
        unknown = set(self.platforms) - set(PLATFORMS)
        if unknown or not self.platforms:
            raise ExportError(f"--platforms takes some of {', '.join(PLATFORMS)}, not {','.join(self.platforms)}")

    @property
    def fixed_batch(self) -> int | None:
        """The batch of the exported program: None (symbolic) for StableHLO without --batch, else --batch or 1."""
        if self.batch is None and self.format == "stablehlo":
            return None
        return self.batch or 1


def clip_function(model, variables, dtype: str = "float32"):
    """The exported computation: uint8 clips to float32 logits, normalised inside.

    Args:
      model: the Flax model.
      variables: its variables.
      dtype: the compute dtype of the input.

    Returns:
      `f(video (B, T, H, W, 3) uint8) -> (B, K) float32`.
    """
    compute = None if dtype == "float32" else jnp.dtype(dtype)

    def logits(video):
        return model.apply(variables, normalise(video, compute)).astype(jnp.float32)

    return logits


def export(directory: str, out: str | Path, target: Target, frames: int, size: int, info: dict) -> dict:
    """Writes a converted checkpoint's program to `out` and its sidecar to `out`.json, each file whole.

    Args:
      directory: a converted checkpoint directory.
      out: the file to write.
      target: what to export (checked first).
      frames: frames of a clip.
      size: a frame's height and width.
      info: what the sidecar also holds: `source` (the checkpoint as the user named it), `class_names`,
        `sampling_rate`, `sampling_mode`.

    Returns:
      The sidecar.

    Raises:
      ExportError: a combination the format cannot hold, or a converter's refusal (its first line).
      CheckpointError: a checkpoint that cannot be read.
    """
    target.check()
    model, variables = load_directory(directory, dtype=None if target.dtype == "float32" else target.dtype)
    fn = clip_function(model, variables, target.dtype)
    shape = (target.fixed_batch, frames, size, size, 3)
    if target.format == "stablehlo":
        data = stablehlo(fn, shape, target.platforms)
    else:
        data = litert(fn, shape, target.quantize)
        if target.format == "onnx":
            data = onnx_from_litert(data)
    meta = sidecar(directory, target, shape, model.num_classes, info)
    _write_whole(Path(out), data)
    _write_whole(Path(f"{out}.json"), (json.dumps(meta, indent=1) + "\n").encode())
    return meta


def stablehlo(fn, shape: tuple, platforms: tuple[str, ...]) -> bytes:
    """`fn` exported by `jax.export` for `platforms`.

    Args:
      fn: uint8 clips to logits.
      shape: the input's shape; a None batch is the symbolic dimension `b`.
      platforms: lowering platforms.

    Returns:
      The serialised `jax.export.Exported`.
    """
    batch = jax.export.symbolic_shape("b")[0] if shape[0] is None else shape[0]
    spec = jax.ShapeDtypeStruct((batch, *shape[1:]), jnp.uint8)
    return jax.export.export(jax.jit(fn), platforms=platforms)(spec).serialize()


def litert(fn, shape: tuple, quantize: str | None = None) -> bytes:
    """`fn` as a LiteRT flatbuffer, through StableHLO and TensorFlow's converter, builtin ops only.

    Args:
      fn: uint8 clips to logits.
      shape: the input's static shape.
      quantize: "int8" for dynamic-range int8 weights (activations stay float32), or None.

    Returns:
      The flatbuffer.

    Raises:
      ExportError: the converter's refusal, its first error line.
    """
    import tensorflow as tf
    from jax.experimental import jax2tf
    from jaxlib.mlir.dialects import stablehlo as shlo

    with portable():
        exported = jax.export.export(jax.jit(fn), platforms=("cpu",))(jax.ShapeDtypeStruct(shape, jnp.uint8))
    older = shlo.serialize_portable_artifact_str(exported.mlir_module(), LITERT_STABLEHLO)
    exported = dataclasses.replace(exported, mlir_module_serialized=older)
    # jax2tf's own convert() would serialise at jax's default version again; this wraps the re-serialised one.
    call = tf.function(lambda video: jax2tf.jax2tf._run_exported_as_tf([video], exported)[0], autograph=False,
                       input_signature=[tf.TensorSpec(shape, tf.uint8, name=INPUT)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([call.get_concrete_function()], call)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: dynamic-range int8
    try:
        with console.native_stderr_quiet():
            return converter.convert()
    except Exception as e:  # ConverterError and friends; their text is the MLIR diagnostics
        raise ExportError(f"TensorFlow's LiteRT converter refused the model: {_first_error(str(e))}") from None


def onnx_from_litert(flatbuffer: bytes) -> bytes:
    """A LiteRT flatbuffer converted to ONNX by tf2onnx.

    Args:
      flatbuffer: what `litert` returns (float32).

    Returns:
      The serialised ONNX model, input `video`, output `logits`.

    Raises:
      ExportError: a LiteRT op tf2onnx cannot convert.
    """
    import tf2onnx

    _gelu_as_erf(tf2onnx)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(flatbuffer)
        try:
            with console.native_stderr_quiet():
                proto, _ = tf2onnx.convert.from_tflite(str(path), opset=ONNX_OPSET)
        except Exception as e:
            raise ExportError(f"tf2onnx cannot convert the LiteRT model: {_first_error(str(e))}") from None
    graph = proto.graph
    _rename(graph, graph.input[0].name, INPUT)
    _rename(graph, graph.output[0].name, OUTPUT)
    return proto.SerializeToString()


def _gelu_as_erf(tf2onnx) -> None:
    """tf2onnx 1.17 has no handler for LiteRT's GELU (the portable models' `layers.gelu`): this writes it as ONNX's
    0.5 x (1 + Erf(x / sqrt 2)), the exact form."""
    from tf2onnx.handler import tfl_op

    if getattr(tfl_op, "_uniformer_gelu", False):
        return

    @tfl_op(["TFL_GELU"])
    class TflGelu:
        @classmethod
        def to_tf(cls, ctx, node, **kwargs):
            tf2onnx.utils.make_sure(not node.get_attr_value("approximate"), "only the exact (erf) GELU is written")
            del node.attr["approximate"]
            x = node.input[0]
            shape, dtype = ctx.get_shape(x), ctx.get_dtype(x)
            np_dtype = tf2onnx.utils.map_onnx_to_numpy_type(dtype)

            def const(value):
                return ctx.make_const(tf2onnx.utils.make_name(f"{node.name}_c"), np.array(value, np_dtype)).output[0]

            def onnx(op, *inputs):
                return ctx.make_node(op, list(inputs), shapes=[shape], dtypes=[dtype], skip_conversion=True).output[0]

            half = onnx("Mul", x, const(0.5))
            ctx.replace_inputs(node, [half, onnx("Add", onnx("Erf", onnx("Mul", x, const(np.sqrt(0.5)))), const(1))])
            node.type = "Mul"

    tfl_op._uniformer_gelu = True


def _rename(graph, old: str, new: str) -> None:
    """Renames a graph input or output and every reference to it."""
    for value in [*graph.input, *graph.output]:
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]


def sidecar(directory: str, target: Target, shape: tuple, num_classes: int, info: dict) -> dict:
    """What a program's user needs beside it: its input and output, the test protocol, the class names, and the
    checkpoint it came from.

    Args:
      directory: the converted checkpoint.
      target: what was exported.
      shape: the input's shape (None: a symbolic batch).
      num_classes: the logits per clip.
      info: `source`, `class_names`, `sampling_rate`, `sampling_mode`.

    Returns:
      The sidecar's fields.
    """
    metadata = read_metadata(directory)
    return {
        "format": target.format, "platforms": list(target.platforms) if target.format == "stablehlo" else ["cpu"],
        "dtype": target.dtype, "quantize": target.quantize, "variant": metadata["variant"],
        "input": {"name": INPUT, "shape": list(shape), "dtype": "uint8", "layout": "BTHWC, RGB 0-255"},
        "output": {"name": OUTPUT, "shape": [shape[0], num_classes], "dtype": "float32"},
        "normalisation": f"inside the program: (x - {MEAN:g}) / {STD:g}",
        "frames": shape[1], "crop_size": shape[2], "sampling_rate": info["sampling_rate"],
        "sampling_mode": info["sampling_mode"], "class_names": info["class_names"],
        "source": info["source"], "checkpoint": str(directory),
        "source_sha256": metadata.get("source_sha256") or directory_sha256(directory),
    }


def directory_sha256(directory: str | Path) -> str:
    """The sha256 of a converted checkpoint with no source file: of its files' relative paths and contents.

    Args:
      directory: the converted checkpoint.

    Returns:
      The hex digest.
    """
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + sha256(path).encode())
    return digest.hexdigest()


def _write_whole(path: Path, data: bytes) -> None:
    """Writes beside `path`, then renames into place: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _first_error(text: str) -> str:
    """The first line of a converter's message that says what failed."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    line = (errors or lines or ["(no message)"])[0]
    return line[:300]
