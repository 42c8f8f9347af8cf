"""Operating the service: start and supervise tritonserver, check the model before it loads,
and start real servers for tests, the benchmark and the soak run.

Nothing here is imported by the Triton Python-backend models: the inference library is
`whisper_service`, and this package sits on top of it (never the other way round).
"""
