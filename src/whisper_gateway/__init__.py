"""OpenAI-compatible speech API in front of the Triton stack.

`POST /v1/audio/transcriptions`, `POST /v1/audio/translations`, `GET /v1/models`, with the
multipart form, response formats, streaming events and error envelope that OpenAI's API and
SDKs use. It calls Triton through the project's own asyncio client (whisper_triton) and the
decoupled `whisper_stream` model; it imports nothing of the server (whisper_service) nor
faster-whisper. Run it with `python -m whisper_gateway` (scripts/serve starts it beside Triton).

Modules: settings (configuration from the environment), forms (the form, checked), formats
(response bodies), errors (OpenAI's envelope, Triton errors mapped), access (API keys,
per-key concurrency), metrics (Prometheus text), backend (Triton), app (the ASGI app).
"""
