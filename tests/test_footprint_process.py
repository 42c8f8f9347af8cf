"""What a front process loads before its first upload: the VAD's ONNX Runtime session (about
15 MB per process, and there are twenty fronts) only on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

PROGRAM = """
import sys
from whisper_service.options import Limits
from whisper_service.pipeline import Pipeline, warm_up
pipeline = Pipeline(Limits(), 80)
warm_up(pipeline)
print("after warm-up", "onnxruntime" in sys.modules)
sys.path.insert(0, "tests")
import corpus
from whisper_service.options import DecodeOptions
job = pipeline.prepare(corpus.JFK.read_bytes(), DecodeOptions())
print("after an upload", "onnxruntime" in sys.modules, len(job.to_send))
"""


def test_the_vad_is_loaded_on_the_first_upload_not_at_warm_up():
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "after warm-up False" in out, out
    assert "after an upload True 1" in out, out
