"""Server-side library of the Whisper Triton service.

The Python-backend models under `model_repository/` are thin adapters over this package:
audio decoding, option parsing, window cutting, the batched engine and stitching live here so
that they can be imported and tested without a Triton server.
"""
