# Sourced by the scripts that drive a real keyledger: starts one and reads what it prints.
#
# start_keyledger BIN DIR [serve args...]
#   Starts `BIN serve --data-dir DIR/data --listen 127.0.0.1:0 --shutdown-grace 0
#   [serve args...]` (no drain period: nothing balances load in front of it) in the
#   background (stdout to DIR/stdout, stderr to DIR/stderr), waits up to 30 s for its
#   listening line, and sets KEYLEDGER_PID, KEYLEDGER_ADDR (host:port), KEYLEDGER_URL
#   (http://host:port) and KEYLEDGER_SECRET (the bootstrap admin secret). On failure it
#   prints the server's output and returns 1.
#
# stop_keyledger
#   SIGTERM, up to 10 s for a clean exit, then SIGKILL. Safe to call twice.

start_keyledger() {
    local bin=$1 dir=$2
    shift 2
    : >"$dir/stdout"
    : >"$dir/stderr"
    RUST_LOG="${RUST_LOG:-warn}" "$bin" serve --data-dir "$dir/data" --listen 127.0.0.1:0 --shutdown-grace 0 "$@" \
        >"$dir/stdout" 2>"$dir/stderr" &
    KEYLEDGER_PID=$!
    KEYLEDGER_ADDR=""
    KEYLEDGER_SECRET=""
    local _
    for _ in $(seq 1 300); do
        if ! kill -0 "$KEYLEDGER_PID" 2>/dev/null; then
            echo "keyledger serve exited early:" >&2
            cat "$dir/stdout" "$dir/stderr" >&2
            return 1
        fi
        KEYLEDGER_ADDR=$(sed -n 's/^keyledger listening on http:\/\/\([^ ]*\).*$/\1/p' "$dir/stdout" | head -n 1)
        KEYLEDGER_SECRET=$(sed -n 's/^  secret: \(klk_[0-9A-Za-z]*\)$/\1/p' "$dir/stdout" | head -n 1)
        [[ -n "$KEYLEDGER_ADDR" && -n "$KEYLEDGER_SECRET" ]] && break
        sleep 0.1
    done
    if [[ -z "$KEYLEDGER_ADDR" || -z "$KEYLEDGER_SECRET" ]]; then
        echo "no address or bootstrap secret on keyledger's stdout:" >&2
        cat "$dir/stdout" "$dir/stderr" >&2
        return 1
    fi
    KEYLEDGER_URL="http://$KEYLEDGER_ADDR"
}

stop_keyledger() {
    if [[ -n "${KEYLEDGER_PID:-}" ]] && kill -0 "$KEYLEDGER_PID" 2>/dev/null; then
        kill -TERM "$KEYLEDGER_PID" 2>/dev/null || true
        local _
        for _ in $(seq 1 100); do
            kill -0 "$KEYLEDGER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$KEYLEDGER_PID" 2>/dev/null || true
        wait "$KEYLEDGER_PID" 2>/dev/null || true
    fi
}
