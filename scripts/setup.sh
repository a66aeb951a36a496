#!/usr/bin/env bash
# fkv set-up: idempotent. Installs Debian build deps, a project-local Python venv (.venv) with the
# torch wheel (LibTorch for C++) and the test-oracle packages, builds fkv into build/, and fetches
# the default model (SmolLM2-135M-Instruct Q4_1 GGUF) into data/models/ with checksum verification.
#
#   scripts/setup.sh            # everything
#   FKV_SKIP_BUILD=1 scripts/setup.sh   # deps + model only
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { echo "[setup] $*" >&2; }

# ---- Debian packages -------------------------------------------------------------------------
APT_PKGS=(build-essential cmake pkg-config ccache nlohmann-json3-dev libspdlog-dev libfmt-dev catch2 libpcre2-dev libicu-dev unzip)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# ---- Python venv: torch (LibTorch) + test oracles ----------------------------------------------
# Versions pinned; the oracles (transformers, tokenizers, gguf, numpy, safetensors) are used by tests
# and reference scripts only, never by fkv at run time.
PY_REQ="$ROOT/scripts/requirements.txt"
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
STAMP="$VENV/.fkv-req-$(sha256sum "$PY_REQ" | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  log "installing Python packages from scripts/requirements.txt (torch wheel is ~2 GB with NVIDIA libs)"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$PY_REQ"
  rm -f "$VENV"/.fkv-req-*
  touch "$STAMP"
fi

# ---- default model ---------------------------------------------------------------------------
bash "$ROOT/scripts/fetch_model.sh" smollm2-135m-instruct

# ---- build -----------------------------------------------------------------------------------
if [ "${FKV_SKIP_BUILD:-0}" != "1" ]; then
  bash "$ROOT/scripts/build.sh"
fi
log "done"
