// Command keyledger-verify is an independent verifier for keyledger log exports, written
// against the published format with Go's standard library and the Go checksum database's
// own transparency-log packages, golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog.
// It shares no code with keyledger.
//
// It builds in GOPATH mode with Debian's packages (golang-go, golang-golang-x-mod-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode:$TMP go build -o keyledger-verify .
//
// Usage:
//
//	keyledger-verify -vkey VKEY -checkpoint NOTE -log EXPORT [-server URL -token SECRET]
//
// Offline it checks:
//   - the checkpoint note opens with note.Open under note.NewVerifier(vkey), and its C2SP
//     body `<origin>\n<size>\n<base64 root>\n` (tlog.ParseTree reads the Go sumdb's
//     "go.sum database tree" format instead, so the body is parsed here) names the vkey's
//     origin;
//   - every line of the export: it ends in "\n"; it is RFC 8785 (JCS) canonical JSON (checked
//     with a small JCS encoder below, for keyledger's integer-only JSON); seq = line index;
//     per-stream versions 1, 2, ...; timestamps canonical and never going backwards; signer =
//     the vkey's key id; seq 0 is the genesis of the vkey; and the Ed25519 signature over the
//     entry without its "sig" member verifies (crypto/ed25519);
//   - the RFC 6962 tree hash of the first `size` lines, built with tlog.RecordHash (checked
//     to be SHA-256(0x00 || line)), tlog.StoredHashes and tlog.TreeHash, equals the root in
//     the checkpoint.
//
// With -server and -token it also fetches, from the running server, inclusion proofs for
// every seq below the checkpoint size (a sample past 2000) and checks them with
// tlog.CheckRecord against the checkpoint root and the leaf hash of the line in the file, and
// consistency proofs for many (from, to) pairs, checked with tlog.CheckTree against tree hashes
// recomputed from the file. Each kind of proof is also checked against a wrong root, a wrong
// leaf or a wrong index, which must fail (a self-test of the checking itself).
//
// The first failure prints `FAIL seq N: reason` (or `FAIL: reason` when it concerns no single
// entry) and exits 1; success prints `OK ...` and exits 0.
package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// failure is a verification failure; seq < 0 when it is not about one entry.
type failure struct {
	seq    int64
	reason string
}

func (f *failure) Error() string {
	if f.seq < 0 {
		return "FAIL: " + f.reason
	}
	return fmt.Sprintf("FAIL seq %d: %s", f.seq, f.reason)
}

func fail(seq int64, format string, args ...interface{}) *failure {
	return &failure{seq: seq, reason: fmt.Sprintf(format, args...)}
}

func setupFail(format string, args ...interface{}) *failure {
	return fail(-1, format, args...)
}

// ---------------------------------------------------------------------------------------
// Keys and the checkpoint.

// vkey is a parsed verifier key `<name>+<hex8>+<base64(0x01 || pk)>`.
type vkey struct {
	name     string
	keyIDHex string
	pub      ed25519.PublicKey
	verifier note.Verifier
}

func parseVkey(text string) (*vkey, error) {
	v, err := note.NewVerifier(text)
	if err != nil {
		return nil, setupFail("bad -vkey: %v", err)
	}
	// note.NewVerifier has checked the format, the algorithm byte and the key id; the raw
	// key is needed for the entry signatures, which are not notes.
	parts := strings.SplitN(text, "+", 3)
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != 1 {
		return nil, setupFail("bad -vkey: not base64(0x01 || 32-byte Ed25519 key)")
	}
	pub := ed25519.PublicKey(raw[1:])
	h := sha256.New()
	h.Write([]byte(v.Name()))
	h.Write([]byte{'\n', 0x01})
	h.Write(pub)
	id := binary.BigEndian.Uint32(h.Sum(nil)[:4])
	if id != v.KeyHash() {
		return nil, setupFail("bad -vkey: key id does not match SHA-256(name || 0x0A || 0x01 || key)")
	}
	return &vkey{name: v.Name(), keyIDHex: fmt.Sprintf("%08x", id), pub: pub, verifier: v}, nil
}

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

var sizeRE = regexp.MustCompile(`^(0|[1-9][0-9]*)$`)

// openCheckpoint opens a C2SP signed checkpoint note with x/mod's note package and parses
// its body `<origin>\n<size>\n<base64 root>\n[extension lines]`.
func openCheckpoint(msg []byte, k *vkey) (*checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(k.verifier))
	if err != nil {
		return nil, setupFail("the checkpoint does not verify: %v", err)
	}
	if len(n.Sigs) == 0 {
		return nil, setupFail("the checkpoint has no verified signature")
	}
	lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
	if len(lines) < 3 {
		return nil, setupFail("bad checkpoint: want <origin>, <size> and <root> lines")
	}
	for _, extra := range lines[3:] {
		if extra == "" {
			return nil, setupFail("bad checkpoint: empty extension line")
		}
	}
	if lines[0] != k.name {
		return nil, setupFail("the checkpoint origin %q is not the vkey's name %q", lines[0], k.name)
	}
	if !sizeRE.MatchString(lines[1]) {
		return nil, setupFail("bad checkpoint: size is not a decimal number")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return nil, setupFail("bad checkpoint: size out of range")
	}
	root, err := decodeHash(lines[2])
	if err != nil {
		return nil, setupFail("bad checkpoint: root: %v", err)
	}
	return &checkpoint{origin: lines[0], size: size, root: root}, nil
}

// decodeStrict decodes standard padded base64 and requires the text to be the canonical
// encoding of the bytes (no non-zero unused bits).
func decodeStrict(s string) ([]byte, error) {
	raw, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, errors.New("not valid base64")
	}
	if base64.StdEncoding.EncodeToString(raw) != s {
		return nil, errors.New("not canonical base64")
	}
	return raw, nil
}

func decodeHash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	raw, err := decodeStrict(s)
	if err != nil {
		return h, err
	}
	if len(raw) != tlog.HashSize {
		return h, errors.New("not 32 bytes")
	}
	copy(h[:], raw)
	return h, nil
}

// ---------------------------------------------------------------------------------------
// RFC 8785 (JCS) for keyledger's JSON, which holds no floating-point numbers.

const maxSafeInt = 1<<53 - 1

// jcsEncode writes the canonical form of a value decoded with json.Decoder.UseNumber.
// Objects: members sorted by the UTF-16 code units of their names; strings: escaped as
// ECMAScript's JSON.stringify does; numbers: only integers in the I-JSON safe range, written
// in their shortest decimal form (what ECMAScript prints for them); no whitespace.
func jcsEncode(buf *bytes.Buffer, v interface{}) error {
	switch x := v.(type) {
	case nil:
		buf.WriteString("null")
	case bool:
		if x {
			buf.WriteString("true")
		} else {
			buf.WriteString("false")
		}
	case json.Number:
		n, err := strconv.ParseInt(string(x), 10, 64)
		if err != nil {
			return fmt.Errorf("number %s is not an integer", string(x))
		}
		if n > maxSafeInt || n < -maxSafeInt {
			return fmt.Errorf("integer %d is outside the I-JSON safe range", n)
		}
		buf.WriteString(strconv.FormatInt(n, 10))
	case string:
		jcsString(buf, x)
	case []interface{}:
		buf.WriteByte('[')
		for i, item := range x {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := jcsEncode(buf, item); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case map[string]interface{}:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return utf16Less(keys[i], keys[j]) })
		buf.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			jcsString(buf, k)
			buf.WriteByte(':')
			if err := jcsEncode(buf, x[k]); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	default:
		return fmt.Errorf("unexpected JSON value %T", v)
	}
	return nil
}

func utf16Less(a, b string) bool {
	ua, ub := utf16.Encode([]rune(a)), utf16.Encode([]rune(b))
	for i := 0; i < len(ua) && i < len(ub); i++ {
		if ua[i] != ub[i] {
			return ua[i] < ub[i]
		}
	}
	return len(ua) < len(ub)
}

func jcsString(buf *bytes.Buffer, s string) {
	const hexDigits = "0123456789abcdef"
	buf.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			buf.WriteString(`\"`)
		case '\\':
			buf.WriteString(`\\`)
		case '\b':
			buf.WriteString(`\b`)
		case '\f':
			buf.WriteString(`\f`)
		case '\n':
			buf.WriteString(`\n`)
		case '\r':
			buf.WriteString(`\r`)
		case '\t':
			buf.WriteString(`\t`)
		default:
			if r < 0x20 {
				buf.WriteString(`\u00`)
				buf.WriteByte(hexDigits[r>>4])
				buf.WriteByte(hexDigits[r&0xf])
			} else {
				buf.WriteRune(r)
			}
		}
	}
	buf.WriteByte('"')
}

// withoutTopLevelSig returns the line with its top-level "sig" member removed, by position.
//
// The bytes that `sig` signs are the JCS form of the entry without `sig`. The line has
// already been checked to be canonical, so its members are sorted and it has no whitespace;
// removing one member from a sorted object leaves a sorted object, so cutting the member's
// exact bytes (with the comma that joins it to its neighbour) out of the line IS the JCS form
// of the object without it. In keyledger's member order ("actor" < "at" < "data" < "id" <
// "seq" < "sig" < "signer" < ...; "sig" sorts before "signer" because it is a prefix of it)
// the member is never first, so the cut is `,"sig":"<value>"`. The member is located by
// scanning the top-level object only (tracking strings, escapes and nesting), so a "sig"
// inside `data` or inside a string can never be mistaken for it. The result is cross-checked
// against a fresh JCS encoding of the parsed entry without "sig".
func withoutTopLevelSig(line []byte) ([]byte, error) {
	i := 0
	skipString := func() error { // at '"'; leaves i after the closing quote
		i++
		for i < len(line) {
			switch line[i] {
			case '\\':
				i += 2
				continue
			case '"':
				i++
				return nil
			}
			i++
		}
		return errors.New("unterminated string")
	}
	skipValue := func() error { // leaves i after the value
		depth := 0
		for i < len(line) {
			switch c := line[i]; c {
			case '"':
				if err := skipString(); err != nil {
					return err
				}
				if depth == 0 {
					return nil
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth == 0 {
					return nil // end of the enclosing object: a scalar just ended
				}
				depth--
				if depth == 0 {
					i++
					return nil
				}
			case ',':
				if depth == 0 {
					return nil
				}
			}
			i++
		}
		return errors.New("truncated value")
	}
	if len(line) == 0 || line[0] != '{' {
		return nil, errors.New("not an object")
	}
	i = 1
	for i < len(line) && line[i] != '}' {
		memberStart := i // at the key's opening quote, or at the ',' before it
		if line[i] == ',' {
			i++
		}
		if i >= len(line) || line[i] != '"' {
			return nil, errors.New("expected a member name")
		}
		keyStart := i
		if err := skipString(); err != nil {
			return nil, err
		}
		key := line[keyStart:i]
		if i >= len(line) || line[i] != ':' {
			return nil, errors.New("expected ':'")
		}
		i++
		if err := skipValue(); err != nil {
			return nil, err
		}
		if string(key) == `"sig"` {
			out := make([]byte, 0, len(line))
			if line[memberStart] == ',' {
				out = append(out, line[:memberStart]...)
				out = append(out, line[i:]...)
			} else { // first member: drop it and the comma after it, if any
				out = append(out, line[:memberStart]...)
				rest := line[i:]
				if len(rest) > 0 && rest[0] == ',' {
					rest = rest[1:]
				}
				out = append(out, rest...)
			}
			return out, nil
		}
	}
	return nil, errors.New("no top-level sig member")
}

// ---------------------------------------------------------------------------------------
// Entries.

var (
	timestampRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$`)
	streamRE    = regexp.MustCompile(`^(ledger|(api_key|user|pat|activity)/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$`)
	entryFields = []string{"actor", "at", "data", "id", "seq", "sig", "signer", "stream", "type", "v", "version"}
)

type entryChecker struct {
	key      *vkey
	versions map[string]int64
	lastAt   string
}

func intField(m map[string]interface{}, name string) (int64, bool) {
	n, ok := m[name].(json.Number)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(string(n), 10, 64)
	return v, err == nil
}

func (c *entryChecker) check(seq int64, line []byte) error {
	if !utf8.Valid(line) {
		return fail(seq, "not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var value interface{}
	if err := dec.Decode(&value); err != nil {
		return fail(seq, "not valid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fail(seq, "not valid JSON: data after the value")
	}
	var canon bytes.Buffer
	if err := jcsEncode(&canon, value); err != nil {
		return fail(seq, "no RFC 8785 canonical form: %v", err)
	}
	if !bytes.Equal(canon.Bytes(), line) {
		return fail(seq, "not in RFC 8785 canonical form")
	}
	obj, ok := value.(map[string]interface{})
	if !ok {
		return fail(seq, "entry is not a JSON object")
	}
	if len(obj) != len(entryFields) {
		return fail(seq, "entry has %d fields, want %d", len(obj), len(entryFields))
	}
	for _, f := range entryFields {
		if _, ok := obj[f]; !ok {
			return fail(seq, "missing field %q", f)
		}
	}
	if v, ok := intField(obj, "v"); !ok || v != 1 {
		return fail(seq, "unsupported entry format version")
	}
	got, ok := intField(obj, "seq")
	if !ok {
		return fail(seq, "seq is not an integer")
	}
	if got != seq {
		return fail(seq, "found seq %d where seq %d belongs (an entry is missing or out of order)", got, seq)
	}
	stream, ok := obj["stream"].(string)
	if !ok || !streamRE.MatchString(stream) {
		return fail(seq, "stream is not a valid stream name")
	}
	want := c.versions[stream] + 1
	if version, ok := intField(obj, "version"); !ok || version != want {
		return fail(seq, "stream %s has version %v where %d belongs", stream, obj["version"], want)
	}
	c.versions[stream] = want
	at, ok := obj["at"].(string)
	if !ok || !timestampRE.MatchString(at) {
		return fail(seq, "at is not a canonical UTC timestamp")
	}
	if at < c.lastAt { // fixed-width UTC timestamps compare as strings
		return fail(seq, "timestamp goes backwards")
	}
	c.lastAt = at
	typ, ok := obj["type"].(string)
	if !ok {
		return fail(seq, "type is not a string")
	}
	if signer, _ := obj["signer"].(string); signer != c.key.keyIDHex {
		return fail(seq, "signed by key %v but the vkey is %s", obj["signer"], c.key.keyIDHex)
	}
	data, ok := obj["data"].(map[string]interface{})
	if !ok {
		return fail(seq, "data is not an object")
	}
	if seq == 0 {
		if typ != "ledger.initialized" || stream != "ledger" {
			return fail(0, "seq 0 is not ledger.initialized")
		}
		if data["origin"] != c.key.name || data["public_key"] != base64.StdEncoding.EncodeToString(c.key.pub) {
			return fail(0, "the genesis names another key or origin than the vkey")
		}
	} else if typ == "ledger.initialized" {
		return fail(seq, "a second ledger.initialized")
	}
	sigText, ok := obj["sig"].(string)
	if !ok {
		return fail(seq, "sig is not a string")
	}
	sig, err := decodeStrict(sigText)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fail(seq, "sig is not a base64 Ed25519 signature")
	}
	signed, err := withoutTopLevelSig(line)
	if err != nil {
		return fail(seq, "cannot remove sig: %v", err)
	}
	delete(obj, "sig")
	var check bytes.Buffer
	if err := jcsEncode(&check, obj); err != nil || !bytes.Equal(check.Bytes(), signed) {
		return fail(seq, "internal: the entry without sig is not what its JCS encoding is")
	}
	if !ed25519.Verify(c.key.pub, signed, sig) {
		return fail(seq, "signature does not verify")
	}
	return nil
}

// ---------------------------------------------------------------------------------------
// The tree.

// memHashes holds tlog's stored hashes (about two per record) in memory.
type memHashes []tlog.Hash

func (m *memHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(*m)) {
			return nil, fmt.Errorf("stored hash %d not available", x)
		}
		out[i] = (*m)[x]
	}
	return out, nil
}

type logFile struct {
	entries int64
	leaves  []tlog.Hash // record hash of every line, by seq
	stored  memHashes
}

// treeHash is the RFC 6962 root of the first n records, from tlog's stored hashes.
func (l *logFile) treeHash(n int64) (tlog.Hash, error) {
	return tlog.TreeHash(n, &l.stored)
}

func readLog(path string, key *vkey, cp *checkpoint) (*logFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, setupFail("%v", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	checker := &entryChecker{key: key, versions: map[string]int64{}}
	l := &logFile{}
	for seq := int64(0); ; seq++ {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			if len(line) > 0 {
				return nil, fail(seq, "the last line is truncated (no final newline)")
			}
			break
		}
		if err != nil {
			return nil, setupFail("reading %s: %v", path, err)
		}
		line = line[:len(line)-1]
		if err := checker.check(seq, line); err != nil {
			return nil, err
		}
		rh := tlog.RecordHash(line)
		if manual := sha256.Sum256(append([]byte{0x00}, line...)); rh != tlog.Hash(manual) {
			return nil, fail(seq, "internal: tlog.RecordHash is not SHA-256(0x00 || entry)")
		}
		hashes, err := tlog.StoredHashesForRecordHash(seq, rh, &l.stored)
		if err != nil {
			return nil, fail(seq, "building the tree: %v", err)
		}
		l.stored = append(l.stored, hashes...)
		l.leaves = append(l.leaves, rh)
		l.entries = seq + 1
		if l.entries == cp.size {
			root, err := l.treeHash(cp.size)
			if err != nil {
				return nil, fail(seq, "building the tree: %v", err)
			}
			if root != cp.root {
				return nil, fail(seq, "the Merkle root of entries 0..=%d differs from the checkpoint's", seq)
			}
		}
	}
	if l.entries < cp.size {
		return nil, fail(l.entries, "missing: the file ends here but the checkpoint covers %d entries", cp.size)
	}
	if cp.size == 0 && cp.root != tlog.Hash(sha256.Sum256(nil)) {
		return nil, setupFail("the checkpoint of size 0 does not have the empty root")
	}
	return l, nil
}

// ---------------------------------------------------------------------------------------
// Proofs from a running server.

type client struct {
	base  string
	token string
	http  *http.Client
}

func (c *client) get(path string, query url.Values, out interface{}) error {
	req, err := http.NewRequest("GET", strings.TrimRight(c.base, "/")+path+"?"+query.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: HTTP %d: %s", path, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, out)
}

func decodeHashes(list []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(list))
	for i, s := range list {
		h, err := decodeHash(s)
		if err != nil {
			return nil, fmt.Errorf("proof hash %d: %v", i, err)
		}
		out[i] = h
	}
	return out, nil
}

func flip(h tlog.Hash) tlog.Hash {
	h[0] ^= 0x01
	return h
}

// sample returns the values of [lo, hi) when there are at most max of them, else about max
// values spread evenly over the range, always including both ends (and, for large samples,
// the first and last 50 and the power-of-two boundaries, where proofs change shape).
func sample(lo, hi int64, max int64) []int64 {
	var out []int64
	if hi-lo <= max {
		for x := lo; x < hi; x++ {
			out = append(out, x)
		}
		return out
	}
	seen := map[int64]bool{}
	add := func(x int64) {
		if x >= lo && x < hi && !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	add(lo)
	add(hi - 1)
	if max >= 200 {
		for d := int64(0); d < 50; d++ {
			add(lo + d)
			add(hi - 1 - d)
		}
		for p := int64(1); p < hi; p *= 2 {
			add(p - 1)
			add(p)
			add(p + 1)
		}
	}
	step := (hi - lo + max - 1) / max // rounded up: at most max evenly spaced values
	if step < 1 {
		step = 1
	}
	for x := lo; x < hi; x += step {
		add(x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

type inclusionResp struct {
	Seq    int64    `json:"seq"`
	Size   int64    `json:"size"`
	Root   string   `json:"root"`
	Hashes []string `json:"hashes"`
}

type consistencyResp struct {
	From   int64    `json:"from"`
	To     int64    `json:"to"`
	Hashes []string `json:"hashes"`
}

func checkProofs(c *client, l *logFile, cp *checkpoint) (inclusions, consistencies int, err error) {
	size := cp.size
	if size == 0 {
		return 0, 0, nil
	}
	for _, seq := range sample(0, size, 2000) {
		var resp inclusionResp
		q := url.Values{"seq": {strconv.FormatInt(seq, 10)}, "size": {strconv.FormatInt(size, 10)}}
		if err := c.get("/v1/audit/proof/inclusion", q, &resp); err != nil {
			return inclusions, consistencies, fail(seq, "fetching the inclusion proof: %v", err)
		}
		if resp.Seq != seq || resp.Size != size {
			return inclusions, consistencies, fail(seq, "inclusion proof is for seq %d size %d", resp.Seq, resp.Size)
		}
		if root, err := decodeHash(resp.Root); err != nil || root != cp.root {
			return inclusions, consistencies, fail(seq, "inclusion proof names root %s, not the checkpoint's", resp.Root)
		}
		proof, err := decodeHashes(resp.Hashes)
		if err != nil {
			return inclusions, consistencies, fail(seq, "inclusion proof: %v", err)
		}
		leaf := l.leaves[seq]
		if err := tlog.CheckRecord(proof, size, cp.root, seq, leaf); err != nil {
			return inclusions, consistencies, fail(seq, "inclusion proof does not verify against the checkpoint root: %v", err)
		}
		// Self-test: the same proof must not verify a wrong root, a wrong leaf or (for a
		// tree of more than one leaf) another index.
		if tlog.CheckRecord(proof, size, flip(cp.root), seq, leaf) == nil {
			return inclusions, consistencies, fail(seq, "self-test: an inclusion proof verified against a wrong root")
		}
		if tlog.CheckRecord(proof, size, cp.root, seq, flip(leaf)) == nil {
			return inclusions, consistencies, fail(seq, "self-test: an inclusion proof verified a wrong leaf")
		}
		if size > 1 {
			other := (seq + 1) % size
			if tlog.CheckRecord(proof, size, cp.root, other, leaf) == nil {
				return inclusions, consistencies, fail(seq, "self-test: an inclusion proof verified at index %d", other)
			}
		}
		inclusions++
	}

	type pair struct{ from, to int64 }
	var pairs []pair
	for _, from := range sample(1, size+1, 1500) {
		pairs = append(pairs, pair{from, size})
	}
	for _, to := range sample(1, size+1, 60) { // and into older trees
		for _, from := range sample(1, to+1, 12) {
			pairs = append(pairs, pair{from, to})
		}
	}
	for _, p := range pairs {
		var resp consistencyResp
		q := url.Values{"from": {strconv.FormatInt(p.from, 10)}, "to": {strconv.FormatInt(p.to, 10)}}
		where := fmt.Sprintf("consistency proof %d -> %d", p.from, p.to)
		if err := c.get("/v1/audit/proof/consistency", q, &resp); err != nil {
			return inclusions, consistencies, setupFail("fetching the %s: %v", where, err)
		}
		if resp.From != p.from || resp.To != p.to {
			return inclusions, consistencies, setupFail("%s: answer is for %d -> %d", where, resp.From, resp.To)
		}
		proof, err := decodeHashes(resp.Hashes)
		if err != nil {
			return inclusions, consistencies, setupFail("%s: %v", where, err)
		}
		oldHash, err1 := l.treeHash(p.from)
		newHash, err2 := l.treeHash(p.to)
		if err1 != nil || err2 != nil {
			return inclusions, consistencies, setupFail("%s: recomputing tree hashes failed", where)
		}
		if p.to == size && newHash != cp.root {
			return inclusions, consistencies, setupFail("internal: tree hash of %d is not the checkpoint root", size)
		}
		if err := tlog.CheckTree(proof, p.to, newHash, p.from, oldHash); err != nil {
			// The old tree ends at seq from-1: the first entry the two trees disagree on
			// is at or before it.
			return inclusions, consistencies, fail(p.from-1, "%s does not verify: %v", where, err)
		}
		if tlog.CheckTree(proof, p.to, flip(newHash), p.from, oldHash) == nil {
			return inclusions, consistencies, setupFail("self-test: %s verified against a wrong new root", where)
		}
		if tlog.CheckTree(proof, p.to, newHash, p.from, flip(oldHash)) == nil {
			return inclusions, consistencies, setupFail("self-test: %s verified against a wrong old root", where)
		}
		consistencies++
	}
	return inclusions, consistencies, nil
}

// ---------------------------------------------------------------------------------------

func run() error {
	vkeyText := flag.String("vkey", "", "verifier key <origin>+<hex8>+<base64> (from /v1/audit/public-key)")
	notePath := flag.String("checkpoint", "", "checkpoint note file (from /v1/audit/checkpoint)")
	logPath := flag.String("log", "", "the export (NDJSON from /v1/audit/export)")
	server := flag.String("server", "", "base URL of a running keyledger, to check inclusion and consistency proofs")
	token := flag.String("token", "", "admin or auditor secret for -server")
	flag.Parse()
	if *vkeyText == "" || *notePath == "" || *logPath == "" || flag.NArg() != 0 {
		flag.Usage()
		return setupFail("need -vkey, -checkpoint and -log")
	}
	if (*server == "") != (*token == "") {
		return setupFail("-server and -token go together")
	}
	key, err := parseVkey(strings.TrimSpace(*vkeyText))
	if err != nil {
		return err
	}
	msg, err := os.ReadFile(*notePath)
	if err != nil {
		return setupFail("%v", err)
	}
	cp, err := openCheckpoint(msg, key)
	if err != nil {
		return err
	}
	l, err := readLog(*logPath, key, cp)
	if err != nil {
		return err
	}
	summary := fmt.Sprintf("OK: %d entries verified (canonical JCS, seq chain, stream versions, Ed25519 signatures); tlog tree hash of the first %d matches the checkpoint (%s)",
		l.entries, cp.size, base64.StdEncoding.EncodeToString(cp.root[:]))
	if l.entries > cp.size {
		summary += fmt.Sprintf("; %d entries past the checkpoint are not covered by it", l.entries-cp.size)
	}
	if *server != "" {
		c := &client{base: *server, token: *token, http: &http.Client{Timeout: 30 * time.Second}}
		inc, cons, err := checkProofs(c, l, cp)
		if err != nil {
			return err
		}
		summary += fmt.Sprintf("; %d inclusion proofs (tlog.CheckRecord) and %d consistency proofs (tlog.CheckTree) from %s verify, and fail against wrong roots",
			inc, cons, *server)
	}
	fmt.Println(summary)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err.Error())
		os.Exit(1)
	}
}
