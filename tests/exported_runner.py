"""Runs exported programs the way a deployment does, where uniformer_jax cannot be imported.

    python -I exported_runner.py OUT.npz FILE=CLIP.npy [FILE=CLIP.npy ...]

Each FILE runs in its format's runtime (jax.export, onnxruntime, the LiteRT interpreter) on its uint8 clip; the
logits go to OUT.npz under each file's name. Written apart from the package on purpose: nothing here may come
from it.
"""

import json
import sys

sys.modules["uniformer_jax"] = None  # an editable install would still find the package; make it unimportable
try:
    import uniformer_jax  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("uniformer_jax is importable")

import numpy as np  # noqa: E402  (after the import block above)


def run(path, video):
    meta = json.load(open(path + ".json"))
    if meta["format"] == "stablehlo":
        import jax

        return np.asarray(jax.export.deserialize(bytearray(open(path, "rb").read())).call(video))
    if meta["format"] == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return session.run(None, {meta["input"]["name"]: video})[0]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], video)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


if __name__ == "__main__":
    pairs = [arg.split("=") for arg in sys.argv[2:]]
    np.savez(sys.argv[1], **{path.rsplit("/", 1)[-1]: run(path, np.load(clip)) for path, clip in pairs})
