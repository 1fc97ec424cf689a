"""What the command-line programs print: results, progress bars and one-line errors, not the start-up notices
and deprecation warnings of TensorFlow, absl and TFDS. `--verbosity` (absl's flag) brings all of it back."""

from __future__ import annotations

import contextlib
import glob
import os
import sys
import tempfile
from pathlib import Path

_GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips are PCI devices of Google's


def _verbose() -> bool:
    return any(arg.split("=")[0] in ("--verbosity", "-v") for arg in sys.argv[1:])


def quiet_startup() -> None:
    """Before TensorFlow is first imported: its C++ logging reads the environment once, at import.

    TensorFlow's oneDNN notices ("oneDNN custom operations are on", "oneDNN supports DT_UINT8 only on platforms
    with AVX-512") bypass TF_CPP_MIN_LOG_LEVEL; they go with oneDNN's TensorFlow ops, which the input pipelines
    (JPEG decoding, resizing, augmentation on uint8) do not need. A value the user set is kept.
    """
    if not _verbose():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def quiet_logging() -> None:
    """After absl has parsed the flags: Python-side library logging (Orbax, TFDS, TF deprecations) only on errors."""
    from absl import flags, logging

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)


def quiet_libtpu() -> None:
    """libtpu (the `tpu` extra, which compiles for pods from any machine) is loaded whenever JAX starts its
    backends, and on a host without TPU chips it warns that it cannot find the accelerator type and worker
    hostnames of a TPU VM. Naming a one-host accelerator stops that; hosts with TPU chips are left alone."""
    if not any(Path(v).read_text().strip() == _GOOGLE_PCI_VENDOR for v in glob.glob("/sys/bus/pci/devices/*/vendor")):
        os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5p-8")
        os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")


@contextlib.contextmanager
def native_stderr_quiet():
    """Within: what C++ code writes to the process's stderr (TensorFlow's converters log warnings through an absl
    logging that nothing configures) is dropped, unless `--verbosity` is given. Python exceptions still carry
    their messages.

    Yields:
      Nothing.
    """
    if _verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
