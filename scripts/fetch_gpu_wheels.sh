#!/usr/bin/env bash
# Fill wheels/ (ignored by git, travels with the working tree) with what scripts/gpu_check.sh installs on a GPU
# machine without network whose Python already has torch, torchvision, numpy, pandas, pyarrow, scikit-learn,
# safetensors and pytest: open_clip_torch and the small pure-Python packages `import open_clip` and clipbench's
# in-process paths need (no DVC, no MLflow). regex is compiled: pass PYTHON_VERSION / PLATFORM of the GPU machine
# when it differs from this one (e.g. PYTHON_VERSION=3.10 PLATFORM=manylinux2014_x86_64).
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(open_clip_torch ftfy wcwidth regex tqdm timm huggingface_hub hf-xet filelock fsspec packaging pyyaml
          typing_extensions requests urllib3 idna certifi charset_normalizer click threadpoolctl)
TARGET=()
if [[ -n "${PYTHON_VERSION:-}" ]]; then TARGET+=(--python-version "$PYTHON_VERSION"); fi
if [[ -n "${PLATFORM:-}" ]]; then TARGET+=(--platform "$PLATFORM"); fi
mkdir -p wheels
python -m pip download --no-deps --only-binary=:all: -d wheels "${TARGET[@]}" "${PACKAGES[@]}"
du -sh wheels
