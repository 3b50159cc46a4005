#!/usr/bin/env bash
# Fuzzes a real `keyledger serve` against schemas/openapi.json with Schemathesis (4.x):
# every response must not be a 5xx and must match the documented schema of its status.
#
#   tools/schemathesis.sh [extra schemathesis run options…]
#
# Starts target/debug/keyledger (built first unless KEYLEDGER_BIN names another binary) on
# a fresh temporary data dir at 127.0.0.1 (a free port), reads the address and the
# bootstrap admin secret from its stdout, runs Schemathesis with that secret as the
# bearer credential, and stops the server on exit. Exits non-zero when Schemathesis finds a
# failure (or cannot run). Bounded: SCHEMATHESIS_MAX_EXAMPLES cases per operation (30),
# and a wall clock of SCHEMATHESIS_TIMEOUT seconds (600) after which the run is stopped and
# counts as failed; reports go to SCHEMATHESIS_REPORT_DIR (target/schemathesis).
#
# Requires `schemathesis` on PATH (CI: `pip install 'schemathesis>=4,<5'`).
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-30}"
wall_clock="${SCHEMATHESIS_TIMEOUT:-600}"
report_dir="${SCHEMATHESIS_REPORT_DIR:-target/schemathesis}"

if ! command -v schemathesis >/dev/null 2>&1; then
    echo "schemathesis.sh: schemathesis is not installed (pip install 'schemathesis>=4,<5')" >&2
    exit 2
fi

bin="${KEYLEDGER_BIN:-}"
if [[ -z "$bin" ]]; then
    cargo build --quiet --bin keyledger
    bin="target/debug/keyledger"
fi

# shellcheck source=lib/serve.sh
source tools/lib/serve.sh
work="$(mktemp -d)"
cleanup() {
    stop_keyledger
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_keyledger "$bin" "$work" --activity-window 5 || exit 1
addr="$KEYLEDGER_ADDR"
secret="$KEYLEDGER_SECRET"
server_pid="$KEYLEDGER_PID"
echo "schemathesis.sh: keyledger on http://$addr (data dir $work/data)"

# Schemathesis reuses ids seen in responses (the resource pool) and infers links between
# operations; both would find the bootstrap admin key (in GET /v1/admin/api-keys and
# /v1/me) and disable, delete or regenerate the very credential the run uses. Test data
# comes from the schema and from the OpenAPI document's explicit links instead, which only
# follow resources the run created itself.
cat >"$work/schemathesis.toml" <<'TOML'
[phases.examples.extra-data-sources]
responses = false
[phases.coverage.extra-data-sources]
responses = false
[phases.fuzzing.extra-data-sources]
responses = false
[phases.stateful.inference]
algorithms = ["location-headers"]
TOML

mkdir -p "$report_dir"
report_dir="$(cd "$report_dir" && pwd)"
spec="$(pwd)/schemas/openapi.json"
status=0
# Run from the temp dir so Schemathesis's crash cache (.schemathesis/) stays out of the tree.
(cd "$work" && timeout --kill-after=10 "$wall_clock" schemathesis --config-file "$work/schemathesis.toml" \
    run "$spec" \
    --url "http://$addr" \
    --header "Authorization: Bearer $secret" \
    --checks not_a_server_error,response_schema_conformance \
    --max-examples "$max_examples" \
    --request-timeout 10 \
    --seed "${SCHEMATHESIS_SEED:-20261128}" \
    --generation-database none \
    --report junit \
    --report-dir "$report_dir" \
    --no-color \
    "$@") || status=$?
if [[ "$status" -eq 124 || "$status" -eq 137 ]]; then
    echo "schemathesis.sh: stopped after the ${wall_clock} s wall-clock limit" >&2
fi

if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "schemathesis.sh: keyledger died during the run:" >&2
    tail -n 50 "$work/stderr" >&2
    status=1
else
    # A run whose credential stopped working half-way tested little beyond 401s.
    me_status="$(KL_SECRET="$secret" python3 - "http://$addr/v1/me" <<'PY' || true
import os, sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + os.environ["KL_SECRET"]})
try:
    print(urllib.request.urlopen(request, timeout=10).status)
except urllib.error.HTTPError as e:
    print(e.code)
PY
)"
    if [[ "$me_status" != "200" ]]; then
        echo "schemathesis.sh: the run's admin credential no longer works (GET /v1/me: $me_status)" >&2
        status=1
    fi
fi
exit "$status"
