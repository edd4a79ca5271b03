#!/usr/bin/env bash
# The llama.cpp reference venv, outside the project's environment: llama-cpp-python (llama.cpp built from its
# sdist: cmake + gcc, about 5 minutes on 2 cores) and numpy. The golden scripts tests/goldens/llama_*.py run
# under it: /work/ref-llama/bin/python -m tests.goldens.llama_<family>
set -euo pipefail
target="${1:?usage: make_llama_venv.sh /path/to/venv}"
python3 -m venv "$target"
CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
  "$target/bin/pip" install "llama-cpp-python==0.3.36" "numpy==2.4.6"
"$target/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"
