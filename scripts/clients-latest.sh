#!/usr/bin/env bash
# Runs the client matrix (tests/sdk) on the NEWEST published versions of the six clients,
# not the pinned ones: Claude Code, Codex CLI, openai-node, @anthropic-ai/sdk (npm) and
# openai, anthropic (PyPI), installed into a temporary directory. Prints each client's
# version and PASS/FAIL; exits non-zero when any failed. See docs/clients.md.
#
#   scripts/clients-latest.sh            # all clients
#   KEEP=1 scripts/clients-latest.sh     # keep the temporary install (path printed)
#
# Needs node/npm and python3; builds memproxy and the mock upstream (debug) if needed.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in node npm "${PYTHON:-python3}"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "clients-latest: $tool not found" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/memproxy-clients-latest.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
  echo "==> keeping $WORK"
else
  trap 'rm -rf "$WORK"' EXIT
fi

echo "==> building memproxy and the mock upstream"
cargo build --locked --bins -p memproxy -p mock-upstream

NODE_PKGS=(@anthropic-ai/claude-code @openai/codex openai @anthropic-ai/sdk)
echo "==> installing the newest Node clients into $WORK/clients"
mkdir -p "$WORK/clients"
cp tests/clients/sdk_case.mjs "$WORK/clients/"
printf '{"name": "memproxy-clients-latest", "private": true, "type": "module"}\n' \
  >"$WORK/clients/package.json"
(cd "$WORK/clients" && npm install --no-audit --no-fund --loglevel=error \
  "${NODE_PKGS[@]/%/@latest}")

echo "==> installing the newest Python SDKs into $WORK/venv"
"${PYTHON:-python3}" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade \
  openai anthropic pytest

node_version() { node -p "require('$WORK/clients/node_modules/$1/package.json').version"; }
py_version() { "$WORK/venv/bin/python" -c "import $1; print($1.__version__)"; }

# client id, version, pytest selection
MATRIX=(
  "claude-code|$(node_version @anthropic-ai/claude-code)|tests/sdk/test_claude_code_cli.py"
  "codex|$(node_version @openai/codex)|tests/sdk/test_codex_cli.py"
  "openai-node|$(node_version openai)|tests/sdk/test_node_sdks.py -k openai"
  "anthropic-node|$(node_version @anthropic-ai/sdk)|tests/sdk/test_node_sdks.py -k anthropic"
  "openai-python|$(py_version openai)|tests/sdk/test_openai_sdk.py tests/sdk/test_openai_responses.py tests/sdk/test_openai_sdk_to_anthropic.py"
  "anthropic-python|$(py_version anthropic)|tests/sdk/test_anthropic_sdk.py"
)

export CLIENTS_DIR="$WORK/clients" CLIENTS_REQUIRED=1
failed=0
summary=()
for entry in "${MATRIX[@]}"; do
  IFS='|' read -r client version selection <<<"$entry"
  echo "==> $client $version"
  # shellcheck disable=SC2086 # the selection is several words on purpose
  if "$WORK/venv/bin/python" -m pytest -q -rfEs -p no:cacheprovider $selection; then
    summary+=("PASS  $client $version")
  else
    summary+=("FAIL  $client $version")
    failed=$((failed + 1))
  fi
done

echo
echo "==> newest clients against memproxy $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
printf '%s\n' "${summary[@]}"
echo "$((${#MATRIX[@]} - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
