# Production image: Triton 24.10 (2.51, the same server as the nvidia-pytriton wheel used
# locally) with the whisper model repository. GPU: large-v3 from a read-only mount or a
# download cache volume; without a GPU it falls back to the bundled base model on the CPU.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WHISPER_MODEL_CACHE=/opt/whisper-triton/models \
    WHISPER_DOWNLOAD_ROOT=/var/cache/whisper \
    HF_HOME=/var/cache/whisper/hf \
    TRITON_MODEL_REPOSITORY=/opt/whisper-triton/model_repository \
    TRITONSERVER_DIR=/opt/tritonserver

WORKDIR /opt/whisper-triton

# Dependencies first (pinned in pyproject.toml, the same versions as scripts/serve installs),
# so that code changes do not reinstall them.
COPY pyproject.toml README.md deploy/image-requirements.txt ./
COPY src/ src/
COPY client/ client/
RUN pip install --no-cache-dir --requirement image-requirements.txt \
    && python3 -m whisper_service.bundled_models

COPY model_repository/ model_repository/
COPY scripts/ scripts/

# Non-root: the user owns only the download cache.
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin whisper \
    && mkdir -p /var/cache/whisper \
    && chown whisper /var/cache/whisper
USER 10001

EXPOSE 8000 8001 8002
VOLUME ["/var/cache/whisper"]

# Ready alone is not enough: a dead Python stub leaves Triton "ready" in this version, so the
# check sends a real probe inference.
HEALTHCHECK --interval=30s --timeout=30s --start-period=900s --retries=3 \
    CMD ["python3", "/opt/whisper-triton/scripts/healthcheck"]

# The launcher supervises tritonserver: it reloads a model whose stub died and drains
# in-flight requests on SIGTERM before stopping the server.
ENTRYPOINT ["python3", "-m", "whisper_service.launcher"]
