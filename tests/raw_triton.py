"""Calls to model `whisper` with plain tritonclient: whisper_ops.raw_triton, under the name the
tests have always imported."""

from whisper_ops.raw_triton import AIO, MODULES, client, inputs, parse, transcribe, transcribe_async

__all__ = ["AIO", "MODULES", "client", "inputs", "parse", "transcribe", "transcribe_async"]
