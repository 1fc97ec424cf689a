"""The README's demo, end to end: training learns what no single frame shows, eval.py measures it, and the trained
model's heatmaps find the square."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from uniformer_jax import demo, exporting, inference, runtimes, saliency
from uniformer_jax.data.synthetic import DIRECTIONS
from uniformer_jax.weights.checkpoints import load_directory


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo as the README runs it: its work directory and what it printed."""
    work = tmp_path_factory.mktemp("demo")
    result = subprocess.run([sys.executable, "-m", "uniformer_jax.demo", "--workdir", str(work)], capture_output=True,
                            text=True, timeout=1800, cwd=demo.REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, result.stdout


def test_demo_learns_the_direction_of_motion(demo_run):
    work, out = demo_run
    results = json.loads((work / "run" / "eval" / "eval_results.json").read_text())
    assert results["videos"] == 40 and results["top1"] >= 95.0, results
    predictions = out[out.index("5. predict"):].splitlines()
    # Each video's block: its path, then the classes by probability; the first must be its own direction.
    for video, direction in (("left_000.mp4", "left"), ("up_000.mp4", "up")):
        at = next(i for i, line in enumerate(predictions) if line.endswith(video))
        assert predictions[at + 1].split()[-1] == direction, out[-2000:]


def test_gradcam_peaks_on_the_moving_square(demo_run):
    """In most frames of the held-out videos, the heat's peak is on the square (within 3 pixels of its box; the
    square is found by its colour, 150-255 on a background under 70)."""
    work = demo_run[0]
    from configs import motion

    config = motion.get_config()
    config.data.source = str(work / "tfds/video_classification/motion/1.0.0")
    directory, protocol = inference.resolve(str(work / "run" / "model"), config)
    model, variables = load_directory(directory)
    program = saliency.make_heatmap(model, "gradcam")
    hits = []
    for path in sorted(glob.glob(str(work / "videos/validation/*.mp4"))):
        clip = inference.centre_clip(path, protocol)
        heat = np.asarray(program(variables, clip, np.int32(-1))[2])
        for frame, square in zip(heat, clip.astype(int).sum(axis=-1) > 3 * 110, strict=True):
            ys, xs = np.nonzero(square)
            y, x = np.unravel_index(frame.argmax(), frame.shape)
            hits.append(ys.min() - 3 <= y <= ys.max() + 3 and xs.min() - 3 <= x <= xs.max() + 3)
    assert len(hits) == 40 * 8 and np.mean(hits) > 0.5, np.mean(hits)  # measured 0.72


def test_visualise_writes_the_clip_with_its_class(demo_run, tmp_path):
    work = demo_run[0]
    video = work / "videos/validation/up_000.mp4"
    common = [sys.executable, "-m", "uniformer_jax.visualise", str(video), "--config", "configs/motion.py",
              "--checkpoint", str(work / "run" / "model")]
    result = subprocess.run([*common, "--out", str(tmp_path / "up.mp4"), "--method", "attention"],
                            capture_output=True, text=True, timeout=600, cwd=demo.REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("up ") and "attention heatmap of 8 frames" in result.stdout
    with av.open(str(tmp_path / "up.mp4")) as container:  # the clip the model sees, enlarged, frame by frame
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (192, 192, 3)
    result = subprocess.run([*common, "--out", str(tmp_path / "up.png"), "--class", "sideways"],
                            capture_output=True, text=True, timeout=600, cwd=demo.REPO)
    assert result.returncode == 1 and result.stderr.startswith("error: --class 'sideways' is not one of")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["up.mp4"]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Selenium; Debian's chromium and chromium-driver are installed where missing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        assert os.geteuid() == 0, "the web page's test needs Debian's chromium and chromium-driver (apt-get install)"
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"], check=True,
                       capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1400"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def classify(driver, url: str, path: str | None = None, example: int | None = None) -> str:
    """Loads the page, uploads a file (or picks an example), presses Classify; the summary line it shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#video input[type=file]"))
    if path:
        driver.find_element(By.CSS_SELECTOR, "#video input[type=file]").send_keys(path)
    else:
        driver.find_elements(By.CSS_SELECTOR, "#examples .gallery-item")[example].click()
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#video a, #video .file-preview"))
    driver.find_element(By.CSS_SELECTOR, "#run").click()
    WebDriverWait(driver, 300).until(lambda d: d.find_element(By.CSS_SELECTOR, "#summary").text.strip())
    return driver.find_element(By.CSS_SELECTOR, "#summary").text.strip()


def test_web_page_in_a_real_browser(demo_run, browser, tmp_path):
    """The page's top-1 is predict's; a text file gets a message, not a traceback; a long example gets its
    timeline; nothing is written outside the temporary folder, which is gone when the server stops."""
    from selenium.webdriver.common.by import By

    work = demo_run[0]
    checkpoint, config = str(work / "run" / "model"), str(demo.REPO / "configs" / "motion.py")
    video = str(work / "videos/validation/up_000.mp4")
    predicted = subprocess.run([sys.executable, "-m", "uniformer_jax.predict", video, "--config", config,
                                "--checkpoint", checkpoint, "--json"], capture_output=True, text=True, check=True,
                               cwd=demo.REPO)
    top1 = json.loads(predicted.stdout.splitlines()[-1])["top5"][0]
    (tmp_path / "cwd").mkdir()
    (tmp_path / "tmp").mkdir()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "uniformer_jax.app", "--config", config, "--checkpoint",
                               checkpoint, "--port", str(port)], cwd=tmp_path / "cwd", stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "TMPDIR": str(tmp_path / "tmp"), "PYTHONPATH": str(demo.REPO)})
    try:
        assert server.stdout.readline().startswith(f"serving {checkpoint} on http://127.0.0.1:{port}")
        url = f"http://127.0.0.1:{port}"
        summary = classify(browser, url, video)
        assert summary.startswith(f"{top1['label']} {100 * top1['probability']:.1f}%"), summary
        shown = [e for e in browser.find_elements(By.CSS_SELECTOR, "#timeline") if e.is_displayed()]
        assert not shown  # a clip's length: no timeline
        browser.save_screenshot(str(tmp_path / "app.png"))
        if os.environ.get("UNIFORMER_JAX_SCREENSHOT"):  # how README's picture of the page is made
            shutil.copy(tmp_path / "app.png", os.environ["UNIFORMER_JAX_SCREENSHOT"])
        (tmp_path / "notes.txt").write_text("not a video\n")
        summary = classify(browser, url, str(tmp_path / "notes.txt"))
        assert summary.startswith("error: notes.txt is not a video this page can read"), summary
        assert "traceback" not in browser.page_source.lower()
        summary = classify(browser, url, example=1)
        assert summary.split()[0] == "up", summary  # the example of a square moving up, three clips long
        rows = browser.find_element(By.CSS_SELECTOR, "#timeline").text
        assert browser.find_element(By.CSS_SELECTOR, "#timeline").is_displayed() and rows.count("\nup\n") == 3, rows
        assert "0.0-1.5 s" in rows and "3.2-4.7 s" in rows, rows  # 3 windows of 8 frames at rate 2, 10 fps
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=60)
    assert list((tmp_path / "cwd").iterdir()) == [] and list((tmp_path / "tmp").iterdir()) == [], err[-2000:]


def test_int8_litert_file_keeps_the_demo_models_answers(demo_run, tmp_path):
    """Dynamic-range int8 weights against the float32 LiteRT file, on the 40 held-out videos' test views."""
    work = demo_run[0]
    from configs import motion

    config = motion.get_config()
    config.data.source = str(work / "tfds/video_classification/motion/1.0.0")
    directory, protocol = inference.resolve(str(work / "run" / "model"), config)
    info = {"source": directory, "class_names": list(DIRECTIONS), "sampling_rate": protocol.sampling.rate,
            "sampling_mode": protocol.sampling.mode}
    runs = {}
    for quantize in (None, "int8"):
        path = tmp_path / f"{quantize}.tflite"
        exporting.export(directory, path, exporting.Target("tflite", quantize=quantize),
                         protocol.sampling.num_frames, protocol.views.crop_size, info)
        runs[quantize] = runtimes.load(path)[0]
    assert (tmp_path / "int8.tflite").stat().st_size < 0.4 * (tmp_path / "None.tflite").stat().st_size
    answers = {None: [], "int8": []}
    truth = []
    for path in sorted(glob.glob(str(work / "videos/validation/*.mp4"))):
        views = inference.load_views(path, protocol.sampling, protocol.views)
        truth.append(list(DIRECTIONS).index(Path(path).name.split("_")[0]))
        for quantize, run in runs.items():
            answers[quantize].append(int(sum(run(view[None])[0] for view in views).argmax()))
    agreement = np.mean(np.array(answers["int8"]) == np.array(answers[None]))
    accuracy = np.mean(np.array(answers["int8"]) == np.array(truth))
    assert len(truth) == 40 and agreement >= 0.95 and accuracy >= 0.9, (agreement, accuracy)
