#!/usr/bin/env bash
# Create or update the project's virtual environment in .venv (idempotent, quiet when up to date).
#
# Torch is installed before the project so that you choose its build:
#   SVMS_TORCH      the requirement to install (default: torch==2.13.0). On Linux x86_64 the PyPI
#                   wheel of that version is a CUDA build; on a machine with a local CPU wheel
#                   (pip find-links) pip takes that one.
#   TORCH_INDEX_URL an index for torch only, e.g. https://download.pytorch.org/whl/cu128 for a
#                   specific CUDA build or https://download.pytorch.org/whl/cpu for a CPU-only one.
#   SVMS_EXTRAS     extras of the project to install (default: dev,sim; sim = robosuite for `svms demo`;
#                   add quant for bitsandbytes' 8-bit optimizers, e.g. SVMS_EXTRAS=dev,sim,quant).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"
torch_spec="${SVMS_TORCH:-torch==2.13.0}"
extras="${SVMS_EXTRAS:-dev,sim}"

if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating $venv" >&2
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

# Reinstall only when what we would install has changed.
stamp="$venv/.svms-setup-stamp"
want="$(cat "$root/pyproject.toml"; echo "$torch_spec ${TORCH_INDEX_URL:-} $extras")"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" == "$want" ]; then
    exit 0
fi

echo "[setup] installing $torch_spec${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}" >&2
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${pip[@]}" --index-url "$TORCH_INDEX_URL" "$torch_spec"
else
    "${pip[@]}" "$torch_spec"
fi
echo "[setup] installing svms-gr00t[$extras] (editable)" >&2
"${pip[@]}" -e "$root[$extras]"
if [[ ",$extras," == *",sim,"* ]]; then
    # See pyproject.toml: robosuite's pin mink==0.0.5 -> numpy<2 would break pyarrow; mink is unused.
    echo "[setup] installing robosuite 1.5.2 (--no-deps; its runtime deps come with the sim extra)" >&2
    "${pip[@]}" --no-deps "robosuite==1.5.2"
fi
printf '%s' "$want" > "$stamp"
echo "[setup] done: $venv" >&2
