#!/usr/bin/env bash
# Installs pgai 0.12.1 (the comparison in bench/drain.py and write_overhead.py)
# into its own venv, $PGAI_VENV (default /opt/pgai-venv), with pip only.
#
# pgai's `vectorizer-worker` extra also pulls docling, and with it torch and
# several GB of CUDA wheels, for PDF parsing that these benchmarks never use.
# So pgai is installed with the part of that extra that a column-loading,
# unchunked, OpenAI-embedding vectorizer imports, at the versions the extra
# allows: the worker runs exactly the code a full install would run for it.
# Idempotent: a stamp file records what was installed.
set -euo pipefail

PGAI_VENV=${PGAI_VENV:-/opt/pgai-venv}
PYTHON=${PGAI_PYTHON:-/usr/bin/python3}
REQUIREMENTS=(
    "pgai==0.12.1"
    "openai>=1.44,<2.0"         # the OpenAI embedder
    "tiktoken>=0.7,<1.0"        # its tokenizer (pgai ships the encoding files)
    "ijson>=3.3.0"              # it streams the response
    "pgvector>=0.3,<1.0"        # vectors into psycopg
    "numpy"                     # pgvector's psycopg adapter
    "filetype==1.2.0"           # imported by the worker's loading module
    "exceptiongroup>=1.0,<2.0"
    "tokenizers"                # imported by the embedders package (voyageai's token counter)
)
stamp="$PGAI_VENV/.bench-requirements"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${REQUIREMENTS[*]}" ]; then
    exit 0
fi
echo "==> installing pgai 0.12.1 into $PGAI_VENV"
[ -x "$PGAI_VENV/bin/python" ] || "$PYTHON" -m venv "$PGAI_VENV"
"$PGAI_VENV/bin/pip" install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
"$PGAI_VENV/bin/python" -c "import pgai.vectorizer.worker"   # fails loudly if a module is missing
echo "${REQUIREMENTS[*]}" > "$stamp"
