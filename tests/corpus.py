"""The real recordings in ../shared/audio: whisper_ops.recordings, under the name the tests have
always imported."""

from whisper_ops.recordings import (AISHELL, ALL, AUDIO_DIR, ENGLISH, HOTWORDS, JFK, ROOT, SAMPLE_RATE,
                                    STEREO, Recording, encode, joined, resample, samples)

__all__ = ["AISHELL", "ALL", "AUDIO_DIR", "ENGLISH", "HOTWORDS", "JFK", "ROOT", "SAMPLE_RATE", "STEREO",
           "Recording", "encode", "joined", "resample", "samples"]
