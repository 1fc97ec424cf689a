"""A web page for a model: upload a video (or pick an example), see its top-5 classes, where the model looks, and,
for a long video, the classes of each stretch of it.

    python -m uniformer_jax.app --checkpoint k400_s16 [--port 7860] [--host 127.0.0.1]
    python -m uniformer_jax.app --config configs/motion.py --checkpoint runs/motion/model

The page is Gradio's (the library of Sense-X's own demo Space). It serves on 127.0.0.1 only, unless --host says
otherwise, and is never shared through a public link. The top-5 are those of the test protocol eval.py uses (the
checkpoint's, or --config's); the heatmap is `python -m uniformer_jax.visualise`'s Grad-CAM of the top-1 over the
centre clip; a video longer than two clips also gets `predict --timeline`'s table. The examples are the demo's
moving squares, made at start. Everything the page writes (uploads, examples, pictures) goes to one temporary
folder, removed when the server stops; a file that is not a readable video gets a message on the page.
"""

from __future__ import annotations

from uniformer_jax import console

if __name__ == "__main__":
    console.quiet_startup()  # before TensorFlow loads

import dataclasses
import importlib.util
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from uniformer_jax import evaluation, inference, overlays, saliency, timeline
from uniformer_jax.data import pipelines, synthetic, video
from uniformer_jax.weights.checkpoints import CheckpointError, load_directory

_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file from configs/ whose test protocol to use",
                                          lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "a release name, converted directory or .pth file "
                                                      "(default: the config's)")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "the address to serve on (0.0.0.0: every interface)")
_PORT = flags.DEFINE_integer("port", 7860, "the port to serve on")
_LABELS = flags.DEFINE_string("labels", None, "class names in head order: a file or a short name such as "
                                              "k400-sensex (default: the checkpoint's)")

EXAMPLES = ("left", "up")  # the demo's directions, one video each
LONG = 2  # clips: a video longer than this many clips' span also gets its timeline


@dataclasses.dataclass
class Answer:
    """What the page shows for one video: a summary line, the top-5, the heatmap sheet and the timeline rows."""
    summary: str
    top5: dict[str, float] | None = None
    heatmap: str | None = None
    timeline: list[list] | None = None


class Analyser:
    """A model ready for uploaded videos; one request at a time (the programs are compiled once, for one shape)."""

    def __init__(self, checkpoint: str, config, labels: str | None, folder: Path):
        """Loads the model and starts compiling its programs in the background, so the page is up at once.

        Args:
          checkpoint: a release name, converted directory or .pth file.
          config: a config from configs/, or None.
          labels: as `inference.class_names`'.
          folder: where the heatmap pictures go.
        """
        directory, self.protocol = inference.resolve(checkpoint, config)
        self.model, self.variables = load_directory(directory, dtype=self.protocol.compute_dtype,
                                                    attention=self.protocol.attention)
        self.names = inference.class_names(directory, labels, self.model.num_classes)
        self.step = evaluation.make_step(self.model, self.protocol.aggregate, self.protocol.compute_dtype,
                                         self.protocol.multi_label)
        self.heatmap = saliency.make_heatmap(self.model, "gradcam")
        self.folder = folder
        self.lock = threading.Lock()
        self.requests = 0
        self.lock.acquire()  # held until the programs are compiled: a first request waits for them
        threading.Thread(target=self._warm_up, daemon=True).start()

    def _warm_up(self) -> None:
        views, s = self.protocol.views, self.protocol.views.crop_size
        clip = np.zeros((self.protocol.sampling.num_frames, s, s, 3), np.uint8)
        try:
            self.step(self.variables, np.zeros((1, views.clips * views.crops, *clip.shape), np.uint8))
            self.heatmap(self.variables, clip, np.int32(-1))
            self.step(self.variables, np.zeros((timeline.BATCH, 1, *clip.shape), np.uint8))
        finally:
            self.lock.release()

    def analyse(self, path: str | None) -> Answer:
        """The page's answer for an uploaded file.

        Args:
          path: the uploaded file, or None when nothing was given.

        Returns:
          The answer; for a file that is not a readable video, or none, only the summary, saying what to do.
        """
        if not path:
            return Answer("Upload a video file, or pick one of the examples.")
        start = time.perf_counter()
        try:
            with self.lock:  # the video is decoded once for the views and the heatmap's clip
                frames = inference.resized_frames(path, self.protocol.views.short_side)
                sampling = self.protocol.sampling
                views = inference.views_of(frames, path, sampling, self.protocol.views)
                scores = np.asarray(self.step(self.variables, views[None]))[0]
                probs = evaluation.probabilities(scores, self.protocol, len(views))
                centre = inference.views_of(frames, path, sampling, inference.centre_views(self.protocol))[0]
                _, target, heat = self.heatmap(self.variables, centre, np.int32(-1))
                long = len(frames) > LONG * sampling.num_frames * sampling.rate
                rows = self._timeline(path) if long else None
        except video.VideoError as e:
            name = Path(path).name
            return Answer(f"**error:** {name} is not a video this page can read ({e.args[0].replace(path, name)}). "
                          "Upload an mp4, webm, mkv or avi file.")
        self.requests += 1
        picture = self.folder / f"heatmap_{self.requests}.png"
        label = self.names[int(target)]
        overlays.write(picture, overlays.overlay(centre, np.asarray(heat), f"{label} {probs[int(target)]:.1%}"))
        top = np.argsort(-probs, kind="stable")[:5]
        seconds = time.perf_counter() - start
        return Answer(f"**{self.names[top[0]]}** {probs[top[0]]:.1%} · {len(views)} views of "
                      f"{self.protocol.sampling.num_frames} frames · {seconds:.1f} s",
                      {self.names[c]: float(probs[c]) for c in top}, str(picture), rows)

    def _timeline(self, path: str) -> list[list]:
        """Each window's time span and top class (the page shows them for a video longer than `LONG` clips)."""
        windows = timeline.windows_of(self.protocol, None)
        result = timeline.predict_windows(path, self.step, self.variables, self.names, self.protocol, windows)
        return [[f"{w['start_time']:.1f}-{w['end_time']:.1f} s", w["top5"][0]["label"],
                 f"{w['top5'][0]['probability']:.1%}"] for w in result["windows"]]


def write_examples(folder: Path) -> list[str]:
    """The demo's moving squares, one video of each of `EXAMPLES` (three of its clips one after the other), in the
    folder.

    Args:
      folder: where to write them.

    Returns:
      Their paths.
    """
    rng = np.random.default_rng(0)
    paths = []
    for direction in EXAMPLES:
        path = folder / f"square_{direction}.mp4"
        clip = np.concatenate([synthetic.moving_square(direction, rng) for _ in range(3)])  # long: a timeline
        video.write_frames(path, clip, synthetic.FPS, synthetic.CRF)
        paths.append(str(path))
    return paths


def page(analyser: Analyser, examples: list[str]):
    """The Gradio page.

    Args:
      analyser: the model.
      examples: example video files.

    Returns:
      The `gradio.Blocks`.
    """
    import gradio as gr

    def answer(path):
        a = analyser.analyse(path)
        return (a.summary, a.top5, a.heatmap,
                gr.update(value=a.timeline or [], visible=a.timeline is not None))

    with gr.Blocks(title="UniFormer") as blocks:
        gr.Markdown("## UniFormer: what happens in this video?")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="video", type="filepath", elem_id="video")
                run = gr.Button("Classify", variant="primary", elem_id="run")
                gr.Examples(examples=[[p] for p in examples], inputs=[upload], label="examples", elem_id="examples")
            with gr.Column():
                summary = gr.Markdown(elem_id="summary")
                top5 = gr.Label(num_top_classes=5, label="top-5", elem_id="top5")
        heatmap = gr.Image(label="the clip the model sees, with Grad-CAM of its top class", elem_id="heatmap")
        rows = gr.Dataframe(headers=["time", "class", "probability"], label="timeline", visible=False,
                            elem_id="timeline")
        run.click(answer, inputs=[upload], outputs=[summary, top5, heatmap, rows])
    return blocks


def main(argv):
    """`python -m uniformer_jax.app --checkpoint CKPT`: serves until interrupted.

    Args:
      argv: the program name alone.
    """
    console.quiet_logging()
    config = _CONFIG.value
    checkpoint = inference.checkpoint_of(_CHECKPOINT.value, config)
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {' '.join(argv[1:])}; videos are uploaded on the page")
    if checkpoint is None:
        sys.exit(f"error: {inference.NO_CHECKPOINT}")
    if importlib.util.find_spec("gradio") is None:
        sys.exit("error: the web page needs Gradio: pip install 'uniformer-jax[app]' (in a checkout: pip install -e "
                 "'.[app]')")
    with tempfile.TemporaryDirectory(prefix="uniformer_app_") as folder:
        # Gradio keeps uploads and served files in GRADIO_TEMP_DIR; analytics off: nothing leaves the machine.
        os.environ["GRADIO_TEMP_DIR"] = folder
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
        try:
            analyser = Analyser(checkpoint, config, _LABELS.value, Path(folder))
        except (CheckpointError, ValueError, pipelines.DataError) as e:
            sys.exit(f"error: {e}")
        blocks = page(analyser, write_examples(Path(folder)))
        try:
            blocks.launch(server_name=_HOST.value, server_port=_PORT.value, share=False, ssr_mode=False,
                          footer_links=[], allowed_paths=[folder], quiet=True, prevent_thread_lock=True)
        except OSError as e:  # the port is taken
            sys.exit(f"error: cannot serve on {_HOST.value}:{_PORT.value} ({e}); choose another with --port")
        # Said once the server listens, so whoever reads this line can open the page.
        print(f"serving {checkpoint} on http://{_HOST.value}:{_PORT.value} (Ctrl-C stops it)", flush=True)
        blocks.block_thread()


if __name__ == "__main__":
    app.run(main)
