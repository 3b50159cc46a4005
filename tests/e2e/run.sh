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

work="$(mktemp -d "${TMPDIR:-/tmp}/keyledger-e2e.XXXXXX")"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    # A graceful stop finishes the last commit; give it 10 s, then force it.
    for _ in $(seq 1 100); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  # Keep the server's log next to the screenshots for anyone debugging a failure.
  if [[ -n "${SCREENSHOT_DIR:-}" && -d "$SCREENSHOT_DIR" && -f "$work/stderr" ]]; then
    cp "$work/stderr" "$SCREENSHOT_DIR/server.log" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

: >"$work/stdout"
: >"$work/stderr"
# A 1-second activity window so that usage reaches the log (and the chart) within the test.
"$KEYLEDGER_BIN" serve --data-dir "$work/data" --listen 127.0.0.1:0 --activity-window 1 \
  >"$work/stdout" 2>"$work/stderr" &
server_pid=$!

url=""
admin=""
for _ in $(seq 1 300); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "run.sh: keyledger exited early" >&2
    cat "$work/stdout" "$work/stderr" >&2
    exit 1
  fi
  url="$(sed -n 's/.*listening on \(http:\/\/[^ ]*\).*/\1/p' "$work/stdout" | head -n 1 || true)"
  admin="$(sed -n 's/^  secret: \(klk_[0-9A-Za-z]*\).*/\1/p' "$work/stdout" | head -n 1 || true)"
  [[ -n "$url" && -n "$admin" ]] && break
  sleep 0.1
done
if [[ -z "$url" || -z "$admin" ]]; then
  echo "run.sh: did not read the address and bootstrap secret from keyledger's output" >&2
  cat "$work/stdout" "$work/stderr" >&2
  exit 1
fi
echo "# keyledger at $url" >&2

export KEYLEDGER_URL="$url"
export KEYLEDGER_ADMIN="$admin"
export SCREENSHOT_DIR="${SCREENSHOT_DIR:-$repo/screenshots}"
mkdir -p "$SCREENSHOT_DIR"

# Node's TAP summary (`# pass N`, `# fail 0`) is the last thing printed; the server's log is
# copied to $SCREENSHOT_DIR/server.log on exit.
status=0
(cd "$here" && node --test --test-reporter=tap admin.spec.mjs) || status=$?
exit "$status"
