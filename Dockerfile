# Production image: Triton 24.10 (Triton 2.51, the same server as the nvidia-pytriton wheel used
# locally; Python 3.10) serving the whisper model repository. On a GPU it serves large-v3 from a
# read-only mount (/models/large-v3) or a size name downloaded into the cache volume; without a
# GPU it falls back to the bundled multilingual base model on the CPU.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WHISPER_MODEL_CACHE=/opt/whisper-triton/models \
    WHISPER_DOWNLOAD_ROOT=/var/cache/whisper \
    HF_HOME=/var/cache/whisper/hf \
    TRITON_MODEL_REPOSITORY=/opt/whisper-triton/model_repository \
    TRITONSERVER_DIR=/opt/tritonserver

WORKDIR /opt/whisper-triton

# Dependencies first, so that a change to the models or scripts reuses this layer. Every version
# is pinned in pyproject.toml; "./[extras]" is pip's spelling of this directory with extras.
COPY pyproject.toml README.md ./
COPY src/ src/
COPY client/ client/
RUN pip install --no-cache-dir "./[server,models,gateway]" \
    && python3 -m whisper_service.bundled_models

COPY model_repository/ model_repository/
COPY scripts/ scripts/

# Non-root: the user owns only the download cache; code, models and weights stay root's.
RUN useradd --uid 10001 --no-create-home --home-dir /var/cache/whisper \
        --shell /usr/sbin/nologin whisper \
    && mkdir -p /var/cache/whisper \
    && chown 10001:10001 /var/cache/whisper
USER 10001:10001
VOLUME ["/var/cache/whisper"]

# HTTP (inference, health, metadata), gRPC, Prometheus metrics; the OpenAI-compatible gateway.
EXPOSE 8000 8001 8002 8080

# Readiness alone is not enough: a dead Python stub leaves the model "ready" in Triton 2.51, so
# the check sends a real probe inference. start-period covers a first download of large-v3.
HEALTHCHECK --interval=30s --timeout=30s --start-period=900s --retries=3 \
    CMD ["python3", "/opt/whisper-triton/scripts/healthcheck", "--timeout", "25"]

# tritonserver with the repository API restricted to the admin key, and the gateway beside it
# (see the script's header).
ENTRYPOINT ["/opt/whisper-triton/scripts/container-entrypoint"]
