#!/usr/bin/env bash
# scripts/fetch_model.sh NAME [--models-dir DIR] : fetch + verify a registered model (configs/models/NAME.json).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"; [ -x "$PY" ] || PY=python3
exec "$PY" "$ROOT/scripts/fetch_model.py" "$@"
