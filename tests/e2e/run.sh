#!/usr/bin/env bash
# Browser tests of the admin page.
#
# Builds (or uses) target/debug/keyledger, starts `keyledger serve` on a fresh data dir and a
# free port, reads the address and the bootstrap admin secret from its stdout, runs
# admin.spec.mjs with node's test runner against it, and stops the server on exit.
#
# Needs: Node 20+, `npm ci` done in tests/e2e (done here if node_modules is missing), and a
# Chromium at $CHROMIUM (default /usr/bin/chromium; Debian: apt-get install -y chromium).
#
# Environment:
#   KEYLEDGER_BIN   use this binary instead of building target/debug/keyledger
#   CHROMIUM        browser executable (default /usr/bin/chromium)
#   SCREENSHOT_DIR  where screenshots go (default <repo>/screenshots)
#   KEYLEDGER_E2E_ONLY  run only the tests whose names match this regular expression
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if [[ -z "${KEYLEDGER_BIN:-}" ]]; then
  echo "# building keyledger (cargo build --bin keyledger)" >&2
  (cd "$repo" && cargo build --quiet --bin keyledger)
  KEYLEDGER_BIN="$repo/target/debug/keyledger"
fi
[[ -x "$KEYLEDGER_BIN" ]] || { echo "run.sh: $KEYLEDGER_BIN is not an executable" >&2; exit 2; }

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[[ -x "$CHROMIUM" ]] || { echo "run.sh: no browser at $CHROMIUM (apt-get install -y chromium)" >&2; exit 2; }

if [[ ! -d "$here/node_modules/playwright-core" ]]; then
  echo "# installing test dependencies (npm ci)" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

# shellcheck source=../../tools/lib/serve.sh
source "$repo/tools/lib/serve.sh"
work="$(mktemp -d "${TMPDIR:-/tmp}/keyledger-e2e.XXXXXX")"
cleanup() {
  # A graceful stop finishes the last commit; stop_keyledger gives it 10 s, then forces it.
  stop_keyledger
  # Keep the server's log next to the screenshots for anyone debugging a failure.
  if [[ -n "${SCREENSHOT_DIR:-}" && -d "$SCREENSHOT_DIR" && -f "$work/stderr" ]]; then
    cp "$work/stderr" "$SCREENSHOT_DIR/server.log" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A 1-second activity window so that usage reaches the log (and the chart) within the test.
start_keyledger "$KEYLEDGER_BIN" "$work" --activity-window 1 || exit 1
url="$KEYLEDGER_URL"
admin="$KEYLEDGER_SECRET"
echo "# keyledger at $url" >&2

export KEYLEDGER_URL="$url"
export KEYLEDGER_ADMIN="$admin"
export SCREENSHOT_DIR="${SCREENSHOT_DIR:-$repo/screenshots}"
mkdir -p "$SCREENSHOT_DIR"

# Node's TAP summary (`# pass N`, `# fail 0`) is the last thing printed; the server's log is
# copied to $SCREENSHOT_DIR/server.log on exit.
status=0
only=()
[[ -n "${KEYLEDGER_E2E_ONLY:-}" ]] && only=(--test-name-pattern="$KEYLEDGER_E2E_ONLY")
(cd "$here" && node --test --test-reporter=tap "${only[@]}" admin.spec.mjs) || status=$?
exit "$status"
