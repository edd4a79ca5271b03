#!/usr/bin/env bash
# The reference environment for the golden outputs of contrastive search and DoLa: transformers 4.55.4, the last
# release with both in generate's core (4.56 moved them to Hub `custom_generate` repositories), beside the
# project's torch. It lives outside the repository; the tests never need it, they carry its outputs.
#   bash tests/goldens/make_reference_venv.sh /work/ref-tf4
set -euo pipefail
venv="${1:-/work/ref-tf4}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0 transformers==4.55.4 safetensors
"$venv/bin/python" -c "import transformers, torch; print('transformers', transformers.__version__, 'torch', torch.__version__)"
