"""What a front process loads: the VAD's ONNX Runtime session (about 15 MB per process, and
there are twenty fronts) only on its first upload, and never CTranslate2, tokenizers or
huggingface_hub (the faster_whisper package imports them all: about 8 MB more per process),
nor soundfile (about 2 MB). And glibc, told so by a front, gives a large freed buffer back to
the system at once."""

from __future__ import annotations

import subprocess
import sys

import pytest

import corpus

pytestmark = pytest.mark.slow

PROGRAM = """
import os, sys
os.environ["WHISPER_GPU_VISIBLE"] = "0"  # as the launcher tells the stubs
import whisper_service.front
from whisper_service.gpu import gpu_visible
gpu_visible()
from whisper_service.options import Limits
from whisper_service.pipeline import Pipeline, warm_up
pipeline = Pipeline(Limits(), 80)
warm_up(pipeline)
print("after warm-up", "onnxruntime" in sys.modules)
from whisper_service.options import DecodeOptions
with open(sys.argv[1], "rb") as upload:
    job = pipeline.prepare(upload.read(), DecodeOptions())
print("after an upload", "onnxruntime" in sys.modules, len(job.to_send))
print("model packages", sorted({m.split(".")[0] for m in sys.modules} & {
    "faster_whisper", "ctranslate2", "tokenizers", "huggingface_hub", "soundfile"}))
"""


def test_the_vad_is_loaded_on_the_first_upload_and_no_model_package_ever():
    out = subprocess.run([sys.executable, "-c", PROGRAM, str(corpus.JFK.path)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "after warm-up False" in out, out
    assert "after an upload True 1" in out, out
    assert "model packages []" in out, out


def test_a_large_buffer_is_returned_to_the_system_when_freed():
    """After map_large_buffers_apart, a freed 8 MB buffer leaves the process's resident memory
    at once; glibc's default would keep it in a heap once a buffer that size had been freed."""
    script = (
        "import numpy as np, os\n"
        "from whisper_service import memory\n"
        "assert memory.map_large_buffers_apart()\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
        "for _ in range(3):\n"
        "    before = rss()\n"
        "    buffer = np.ones(2 << 20, np.float32)\n"
        "    during = rss()\n"
        "    del buffer\n"
        "    after = rss()\n"
        "    assert during - before > 6 << 20, (before, during)\n"
        "    assert after - before < 1 << 20, (before, after)\n"
    )
    # Its own process: mallopt changes a process's allocator for good.
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_engine_maps_large_buffers_apart_only_until_it_is_ready():
    """Loading and warm-up (map_large_buffers_apart_until_ready): a freed 8 MB buffer leaves
    resident memory. Serving (serve_from_the_heaps): it stays in the heap for the next one,
    as glibc's default would keep it (mapping each apart cost the engine a quarter of its
    speed)."""
    script = (
        "import numpy as np, os\n"
        "from whisper_service import memory\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
        "def kept():\n"
        "    before = rss()\n"
        "    buffer = np.ones(2 << 20, np.float32)\n"
        "    del buffer\n"
        "    return rss() - before\n"
        "assert memory.map_large_buffers_apart_until_ready()\n"
        "assert max(kept() for _ in range(3)) < 1 << 20\n"
        "assert memory.serve_from_the_heaps()\n"
        "assert kept() > 6 << 20\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
