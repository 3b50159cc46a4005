#!/usr/bin/env bash
# External verification of keyledger's log format by three independent verifiers.
#
# Starts a throwaway `keyledger serve` on 127.0.0.1 (free port, temp data dir), drives a few
# hundred events through the HTTP API (API keys created, renamed, re-roled, regenerated,
# disabled, enabled, deleted; users registered, re-roled, deactivated; tokens issued and
# revoked; /v1/verify calls that produce credential.activity events), exports the log, the
# checkpoint and the verifier key, and then runs
#
#   rust    target/debug/keyledger verify               (keyledger's own verifier)
#   python  tools/verify_log.py                         (stdlib + cryptography + rfc8785)
#   go      tools/go/keyledger-verify                   (x/mod sumdb/note + sumdb/tlog; with
#                                                        -server it also checks inclusion and
#                                                        consistency proofs from the server)
#
# on the untouched export (all must pass) and on tampered copies (all must fail and name the
# expected seq). Prints a table and a final `N passed, M failed` line; exits non-zero on any
# unexpected result. The server is always stopped on exit.
#
# It installs nothing. Prerequisites (what CI installs):
#   pip install cryptography rfc8785
#   apt-get install -y golang-go golang-golang-x-mod-dev
#
# Environment: KEYLEDGER_BIN=path uses that binary instead of `cargo build`;
# KEEP_WORK=1 keeps the temp dir (export, notes, outputs) for inspection.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# shellcheck source=lib/serve.sh
source tools/lib/serve.sh
WORK=$(mktemp -d "${TMPDIR:-/tmp}/keyledger-external-verify.XXXXXX")
PROXY_PID=""

cleanup() {
    if [ -n "$PROXY_PID" ]; then
        kill "$PROXY_PID" 2>/dev/null || true
        wait "$PROXY_PID" 2>/dev/null || true
    fi
    stop_keyledger
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        echo "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# die MESSAGE: stops the run (the EXIT trap stops the server). Inside $(...) only the
# subshell exits, but `set -e` then stops the script at that assignment.
die() {
    echo "external-verify: $*" >&2
    echo "0 passed, 1 failed" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------
# Prerequisites and builds.

GO_XMOD=/usr/share/gocode/src/golang.org/x/mod/sumdb
python3 -c 'import cryptography, rfc8785' 2>/dev/null ||
    die "python3 with 'cryptography' and 'rfc8785' is needed: pip install cryptography rfc8785"
command -v go >/dev/null || die "go is needed: apt-get install -y golang-go"
[ -d "$GO_XMOD/note" ] && [ -d "$GO_XMOD/tlog" ] ||
    die "golang.org/x/mod is needed in /usr/share/gocode: apt-get install -y golang-golang-x-mod-dev"
command -v curl >/dev/null || die "curl is needed"

if [ -n "${KEYLEDGER_BIN:-}" ]; then
    BIN=$KEYLEDGER_BIN
else
    echo "== cargo build"
    cargo build --bin keyledger >"$WORK/cargo.log" 2>&1 || { tail -30 "$WORK/cargo.log" >&2; die "cargo build failed"; }
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/keyledger"
fi
[ -x "$BIN" ] || die "no keyledger binary at $BIN"

echo "== go build tools/go/keyledger-verify (GOPATH mode, $(go version | cut -d' ' -f3))"
GOVERIFY="$WORK/keyledger-verify"
mkdir -p "$WORK/gopath" "$WORK/gocache"
(cd tools/go/keyledger-verify &&
    env GO111MODULE=off GOPATH="/usr/share/gocode:$WORK/gopath" GOCACHE="$WORK/gocache" \
        GOFLAGS= GOPROXY=off go build -o "$GOVERIFY" .) >"$WORK/go-build.log" 2>&1 ||
    { cat "$WORK/go-build.log" >&2; die "go build failed"; }

# ---------------------------------------------------------------------------------------
# The server.

echo "== starting keyledger serve"
start_keyledger "$BIN" "$WORK" --activity-window 1 --origin external-verify.test/log ||
    die "the server did not start"
URL=$KEYLEDGER_URL
ADMIN=$KEYLEDGER_SECRET
echo "   $URL"

# api METHOD PATH [JSON BODY] -> response body on stdout; the call must succeed (2xx).
# The bearer token is $TOKEN (default: the bootstrap admin secret).
api() {
    local method=$1 path=$2 body=${3:-} code
    local args=(-sS -o "$WORK/resp" -w '%{http_code}' -X "$method"
        -H "Authorization: Bearer ${TOKEN:-$ADMIN}")
    if [ -n "$body" ]; then
        args+=(-H 'Content-Type: application/json' --data-binary "$body")
    fi
    code=$(curl "${args[@]}" "$URL$path") || die "$method $path: curl failed"
    case $code in
    2??) cat "$WORK/resp" ;;
    *) die "$method $path -> HTTP $code: $(cat "$WORK/resp")" ;;
    esac
}
# field NAME: the value of the "NAME":"..." string member of the JSON on stdin (the last such
# member; the responses read here have exactly one).
field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" | head -1; }

# ---------------------------------------------------------------------------------------
# Events.

echo "== making events"
NAMES=("billing service" 'reporter \"nightly\"' "élan-ETL ✓" "ingest/eu-west" "backup\\\\job" "cron 42")
ROLES=(basic limited admin)
KEY_IDS=()
KEY_SECRETS=()
for i in $(seq 0 59); do
    name="${NAMES[$((i % ${#NAMES[@]}))]} $i"
    resp=$(api POST /v1/admin/api-keys "{\"name\":\"$name\",\"role\":\"${ROLES[$((i % 3))]}\"}")
    KEY_IDS+=("$(field id <<<"$resp")")
    KEY_SECRETS+=("$(field secret <<<"$resp")")
done
for i in $(seq 0 59); do
    id=${KEY_IDS[$i]}
    if ((i % 2 == 0)); then api PATCH "/v1/admin/api-keys/$id" "{\"name\":\"renamed key $i\"}" >/dev/null; fi
    if ((i % 5 == 1)); then api PATCH "/v1/admin/api-keys/$id" '{"role":"limited"}' >/dev/null; fi
    if ((i % 6 == 2)); then api PATCH "/v1/admin/api-keys/$id" '{"expires_at":"2099-01-01T00:00:00Z"}' >/dev/null; fi
    if ((i % 3 == 0)); then
        resp=$(api POST "/v1/admin/api-keys/$id/regenerate" '{"grace_seconds":60}')
        KEY_SECRETS[$i]=$(field secret <<<"$resp")
    fi
    if ((i % 5 == 0)); then api POST "/v1/admin/api-keys/$id/disable" >/dev/null; fi
    if ((i % 10 == 0)); then api POST "/v1/admin/api-keys/$id/enable" >/dev/null; fi
    if ((i % 7 == 3)); then api DELETE "/v1/admin/api-keys/$id" >/dev/null; fi
done

# A checkpoint from the middle of the run: the final export must verify against it too.
api GET /v1/audit/checkpoint >"$WORK/early.note"

USER_IDS=()
PATS=()
AUDITOR_PAT=""
for i in $(seq 0 19); do
    role=basic
    ((i % 4 == 0)) && role=auditor
    ((i % 4 == 1)) && role=admin
    resp=$(api POST /v1/admin/users "{\"email\":\"user$i@example.test\",\"role\":\"$role\"}")
    uid=$(field id <<<"$resp")
    USER_IDS+=("$uid")
    for t in 1 2; do
        resp=$(api POST "/v1/admin/users/$uid/tokens" "{\"name\":\"laptop $t of user $i\",\"expires_in_days\":30}")
        secret=$(field secret <<<"$resp")
        tid=$(field id <<<"$resp")
        PATS+=("$secret")
        if [ "$role" = auditor ] && [ -z "$AUDITOR_PAT" ]; then AUDITOR_PAT=$secret; fi
        if ((i % 5 == 2 && t == 2)); then api DELETE "/v1/admin/tokens/$tid" >/dev/null; fi
    done
done
for i in $(seq 0 19); do
    uid=${USER_IDS[$i]}
    if ((i % 6 == 3)); then api PATCH "/v1/admin/users/$uid" '{"role":"admin"}' >/dev/null; fi
    if ((i % 7 == 5)); then api DELETE "/v1/admin/users/$uid" >/dev/null; fi
done
[ -n "$AUDITOR_PAT" ] || die "no auditor token was issued"

# /v1/verify calls (200 whatever the answer): activity events, flushed every second.
for round in 1 2; do
    for i in $(seq 0 4 59); do
        api POST /v1/verify "{\"key\":\"${KEY_SECRETS[$i]}\",\"method\":\"GET\",\"path\":\"/orders/$i\"}" >/dev/null
    done
    for i in $(seq 0 3 39); do
        api POST /v1/verify "{\"key\":\"${PATS[$i]}\"}" >/dev/null
    done
    api POST /v1/verify '{"key":"klk_not_a_real_key"}' >/dev/null
    sleep 1.2
done
sleep 1.5 # let the last activity window close

# ---------------------------------------------------------------------------------------
# Export: checkpoint first, then the export up to exactly its size (the export is bounded by
# the latest checkpoint, which may have grown since), read with the auditor's token.

TOKEN=$AUDITOR_PAT api GET /v1/audit/checkpoint >"$WORK/checkpoint.note"
SIZE=$(sed -n 2p "$WORK/checkpoint.note")
TOKEN=$AUDITOR_PAT api GET "/v1/audit/export?until=$((SIZE - 1))" >"$WORK/export.ndjson"
VKEY=$(api GET /v1/audit/public-key | field vkey)
LINES=$(wc -l <"$WORK/export.ndjson")
TYPES=$(sed 's/.*"type":"\([^"]*\)".*/\1/' "$WORK/export.ndjson" | sort | uniq -c | sort -rn |
    awk '{printf "%s%s %s", sep, $2, $1; sep=", "}')
echo "   $LINES entries, checkpoint size $SIZE, vkey $VKEY"
echo "   types: $TYPES"

# ---------------------------------------------------------------------------------------
# Checks.

PASSED=0
FAILED=0
ROWS=()
record() { # variant tool expected ok|FAIL detail
    ROWS+=("$(printf '%-22s %-7s %-22s %-5s %s' "$1" "$2" "$3" "$4" "$5")")
    if [ "$4" = ok ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
}

sanity() { # name condition-result detail
    if [ "$2" = 0 ]; then record "$1" "-" "holds" ok "$3"; else record "$1" "-" "holds" FAIL "$3"; fi
}
r=0; [ "$LINES" -eq "$SIZE" ] || r=1
sanity "export = checkpoint" $r "$LINES lines, size $SIZE"
r=0; [ "$SIZE" -ge 200 ] || r=1
sanity "a few hundred events" $r "$SIZE entries"
r=0; grep -q '"type":"credential.activity"' "$WORK/export.ndjson" || r=1
sanity "activity events" $r "credential.activity present"

# run_tool TOOL FILE NOTE [go extra args...] -> sets RC and OUT
run_tool() {
    local tool=$1 file=$2 note=$3
    shift 3
    set +e
    case $tool in
    rust) OUT=$(timeout 600 "$BIN" verify "$file" --vkey "$VKEY" --checkpoint "$note" 2>&1) ;;
    python) OUT=$(timeout 600 python3 tools/verify_log.py "$file" --vkey "$VKEY" --checkpoint "$note" 2>&1) ;;
    go) OUT=$(timeout 600 "$GOVERIFY" -vkey "$VKEY" -checkpoint "$note" -log "$file" "$@" 2>&1) ;;
    esac
    RC=$?
    set -e
    OUT=$(printf '%s\n' "$OUT" | tail -n 3 | tr '\n' ' ')
}

expect_pass() { # variant file note tool [go args]
    local variant=$1 file=$2 note=$3 tool=$4
    shift 4
    run_tool "$tool" "$file" "$note" "$@"
    if [ "$RC" -eq 0 ] && grep -qi '^ok' <<<"$OUT"; then
        record "$variant" "$tool" "pass" ok "...${OUT: -150}"
    else
        record "$variant" "$tool" "pass" FAIL "rc=$RC ${OUT:0:300}"
    fi
}

expect_fail() { # variant file note seq|- tool
    local variant=$1 file=$2 note=$3 seq=$4 tool=$5 want
    run_tool "$tool" "$file" "$note"
    if [ "$seq" = - ]; then
        want="fail"
        if [ "$RC" -eq 1 ] && ! grep -qi '^ok' <<<"$OUT"; then
            record "$variant" "$tool" "$want" ok "${OUT:0:150}"
        else
            record "$variant" "$tool" "$want" FAIL "rc=$RC ${OUT:0:300}"
        fi
        return
    fi
    want="fail at seq $seq"
    if [ "$RC" -eq 1 ] && grep -qE "(^|[^A-Za-z])seq $seq:" <<<"$OUT"; then
        record "$variant" "$tool" "$want" ok "${OUT:0:150}"
    else
        record "$variant" "$tool" "$want" FAIL "rc=$RC ${OUT:0:300}"
    fi
}

echo "== verifying the untouched export"
EXPORT=$WORK/export.ndjson
for tool in rust python go; do
    if [ "$tool" = go ]; then
        expect_pass untouched "$EXPORT" "$WORK/checkpoint.note" go -server "$URL" -token "$AUDITOR_PAT"
    else
        expect_pass untouched "$EXPORT" "$WORK/checkpoint.note" "$tool"
    fi
done
echo "== verifying against the earlier checkpoint (size $(sed -n 2p "$WORK/early.note"))"
for tool in rust python go; do
    if [ "$tool" = go ]; then
        expect_pass "earlier checkpoint" "$EXPORT" "$WORK/early.note" go -server "$URL" -token "$ADMIN"
    else
        expect_pass "earlier checkpoint" "$EXPORT" "$WORK/early.note" "$tool"
    fi
done

echo "== making tampered copies"
# Writes the tampered files and prints "variant expected_seq" lines.
python3 - "$EXPORT" "$WORK" "$WORK/checkpoint.note" >"$WORK/variants" <<'PY'
import base64, re, sys
export, work, note_path = sys.argv[1], sys.argv[2], sys.argv[3]
lines = open(export, "rb").read().split(b"\n")
assert lines[-1] == b"", "export must end in a newline"
lines = lines[:-1]
n = len(lines)

def write(name, body):
    with open("%s/%s.ndjson" % (work, name), "wb") as f:
        f.write(body)

def joined(ls):
    return b"".join(l + b"\n" for l in ls)

# 1. One byte inside a name (a letter of an api_key.created / pat.created name) in the
#    middle third of the log: the JSON stays valid and canonical, only the signature breaks.
for k in range(n // 3, n):
    if b'"type":"api_key.created"' in lines[k] or b'"type":"pat.created"' in lines[k]:
        m = re.search(rb'"name":"[^"]*?([A-Za-z])', lines[k])
        if m:
            pos = m.start(1)
            line = bytearray(lines[k])
            line[pos] = ord("x") if line[pos] != ord("x") else ord("y")
            ls = list(lines)
            ls[k] = bytes(line)
            write("name-byte", joined(ls))
            print("name-byte", k)
            break
else:
    sys.exit("no line with a name to tamper with")

# 2. Drop a line in the middle.
k = n // 2
write("drop-line", joined(lines[:k] + lines[k + 1:]))
print("drop-line", k)

# 3. Swap two lines.
i, j = n // 3 + 1, n // 3 + 8
ls = list(lines)
ls[i], ls[j] = ls[j], ls[i]
write("swap-lines", joined(ls))
print("swap-lines", i)

# 4. Truncate the last line (cut its last 20 bytes, newline included).
write("truncate-last", joined(lines)[:-20])
print("truncate-last", n - 1)

# 5. Drop the last line: the file is shorter than the checkpoint.
write("drop-last-line", joined(lines[:-1]))
print("drop-last-line", n - 1)

# 6. Valid JSON but not canonical: a space after the first colon.
k = n // 4
ls = list(lines)
ls[k] = ls[k].replace(b":", b": ", 1)
write("non-canonical", joined(ls))
print("non-canonical", k)

# 7. Another entry's signature.
k = 2 * n // 3
ls = list(lines)
sig = re.search(rb'"sig":"([^"]*)"', lines[k + 1]).group(1)
ls[k] = re.sub(rb'"sig":"[^"]*"', b'"sig":"' + sig + b'"', ls[k], count=1)
write("foreign-sig", joined(ls))
print("foreign-sig", k)

# 8. Untouched export, but a checkpoint whose root was changed (its signature breaks).
note = open(note_path, "rb").read().split(b"\n")
root = bytearray(base64.b64decode(note[2]))
root[0] ^= 1
note[2] = base64.b64encode(bytes(root))
open("%s/forged-checkpoint.note" % work, "wb").write(b"\n".join(note))
print("forged-checkpoint -")
PY

echo "== verifying the tampered copies"
while read -r variant seq; do
    if [ "$variant" = forged-checkpoint ]; then
        file=$EXPORT note=$WORK/forged-checkpoint.note
    else
        file=$WORK/$variant.ndjson note=$WORK/checkpoint.note
    fi
    for tool in rust python go; do
        expect_fail "$variant" "$file" "$note" "$seq" "$tool"
    done
done <"$WORK/variants"

# ---------------------------------------------------------------------------------------
# Proofs from a lying server: a proxy in front of the real one corrupts one hash of one
# proof; the Go tool (with -server) must notice and name the seq.

# start_proxy MODE VALUE: inclusion SEQ corrupts the inclusion proof of SEQ; consistency FROM
# corrupts the consistency proof FROM -> checkpoint size. Sets PROXY_URL.
start_proxy() {
    rm -f "$WORK/proxy.port"
    python3 - "$URL" "$WORK/proxy.port" "$1" "$2" <<'PY' 2>"$WORK/proxy.err" &
import http.server, json, sys, urllib.error, urllib.parse, urllib.request
upstream, port_file, mode, value = sys.argv[1:]
class Proxy(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        req = urllib.request.Request(upstream + self.path,
                                     headers={"Authorization": self.headers.get("Authorization", "")})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                code, body = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            code, body = e.code, e.read()
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        key = "seq" if mode == "inclusion" else "from"
        if code == 200 and url.path == "/v1/audit/proof/" + mode and query.get(key) == [value]:
            proof = json.loads(body)
            if proof["hashes"]:
                h = bytearray(__import__("base64").b64decode(proof["hashes"][-1]))
                h[7] ^= 0x40
                proof["hashes"][-1] = __import__("base64").b64encode(bytes(h)).decode()
            body = json.dumps(proof).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
__import__("os").rename(port_file + ".tmp", port_file)
server.serve_forever()
PY
    PROXY_PID=$!
    for _ in $(seq 1 100); do
        [ -s "$WORK/proxy.port" ] && break
        sleep 0.1
    done
    [ -s "$WORK/proxy.port" ] || { cat "$WORK/proxy.err" >&2; die "the proof-tampering proxy did not start"; }
    PROXY_URL="http://127.0.0.1:$(cat "$WORK/proxy.port")"
}
stop_proxy() {
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=""
}

expect_proof_fail() { # variant seq
    local variant=$1 seq=$2
    run_tool go "$EXPORT" "$WORK/checkpoint.note" -server "$PROXY_URL" -token "$AUDITOR_PAT"
    if [ "$RC" -eq 1 ] && grep -qE "(^|[^A-Za-z])seq $seq:" <<<"$OUT"; then
        record "$variant" go "fail at seq $seq" ok "${OUT:0:150}"
    else
        record "$variant" go "fail at seq $seq" FAIL "rc=$RC ${OUT:0:300}"
    fi
}

echo "== checking proofs through a proof-tampering proxy"
K=$((SIZE / 3 + 2))
start_proxy inclusion "$K"
expect_proof_fail "bad inclusion proof" "$K"
stop_proxy
F=$((SIZE / 2 + 3))
start_proxy consistency "$F"
expect_proof_fail "bad consistency proof" "$((F - 1))"
stop_proxy

# ---------------------------------------------------------------------------------------
# Summary.

echo
printf '%-22s %-7s %-22s %-5s %s\n' VARIANT TOOL EXPECTED RESULT OUTPUT
for row in "${ROWS[@]}"; do echo "$row"; done
echo
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
