#!/usr/bin/env python3
"""Independent verifier for a keyledger log export.

    python3 tools/verify_log.py EXPORT.ndjson --vkey VKEY --checkpoint CHECKPOINT.note

Written from the published format only (it shares no code with keyledger) and needs nothing
but the Python standard library plus two PyPI packages:

* ``cryptography`` for Ed25519 (``Ed25519PublicKey.verify``),
* ``rfc8785`` for RFC 8785 (JCS) canonical JSON (``rfc8785.dumps``).

What is checked:

* the verifier key ``<origin>+<hex8>+<base64(0x01 || pk)>``: its key id is
  ``SHA-256(origin || 0x0A || 0x01 || pk)[0:4]``;
* the checkpoint, a C2SP signed note ``<origin>\\n<size>\\n<base64 root>\\n`` + blank line +
  ``— <origin> <base64(keyid4 || sig64)>\\n``: the signature line by the vkey verifies over
  the note text (including the text's final newline), and the origin is the vkey's name;
* every line of the export, in order (line index = seq):
  - it ends in ``\\n`` (a last line without one is a truncated file),
  - it is JSON whose RFC 8785 canonical form is exactly the line's bytes,
  - it has exactly the entry fields, ``v`` = 1, ``seq`` = the line index (no gap, nothing
    out of order), per-stream ``version`` 1, 2, 3, ..., ``at`` canonical and never going
    backwards, ``signer`` = the vkey's key id,
  - seq 0 is ``ledger.initialized`` naming the vkey's origin and public key, and no other
    entry is,
  - ``sig`` is the Ed25519 signature over ``rfc8785.dumps(entry without "sig")``;
* the RFC 6962 Merkle root of the first ``size`` entries (leaf = SHA-256(0x00 || line
  without its newline), node = SHA-256(0x01 || left || right)) equals the checkpoint's,
  computed in constant memory with a stack-based compact range; a file shorter than the
  checkpoint fails. Entries past the checkpoint are verified but not covered by it.

On the first failure it prints ``FAIL seq N: reason`` (or ``FAIL: reason`` for a bad vkey or
checkpoint) to stderr and exits 1; on success it prints ``OK: N entries ...`` and exits 0.
"""

import argparse
import base64
import binascii
import hashlib
import json
import re
import sys

try:
    import rfc8785
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.stderr.write(
        "FAIL: missing dependency (%s); install with: pip install cryptography rfc8785\n" % e
    )
    sys.exit(2)

ALG_ED25519 = 0x01
SIG_PREFIX = "\u2014 "  # EM DASH and a space, as in C2SP signed notes
ENTRY_FIELDS = frozenset(
    ["v", "seq", "id", "stream", "version", "type", "at", "actor", "signer", "data", "sig"]
)
GENESIS = "ledger.initialized"
# keyledger writes timestamps as UTC with exactly six fractional digits and a Z, so the
# canonical ones compare correctly as strings.
TIMESTAMP = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
STREAM = re.compile(
    r"\A(?:ledger|(?:api_key|user|pat|activity)/"
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\Z"
)


class Failure(Exception):
    """A verification failure; ``seq`` is None when it is not about one entry."""

    def __init__(self, seq, reason):
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


def b64decode_strict(text, what):
    """Standard base64 with padding; rejects anything that does not re-encode identically
    (stray characters, non-zero unused bits), so every change to the text is detected."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("%s is not valid base64" % what)
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("%s is not canonical base64" % what)
    return raw


def valid_name(name):
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name, public_key):
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


class Vkey:
    def __init__(self, text):
        parts = text.split("+", 2)
        if len(parts) != 3:
            raise Failure(None, "bad --vkey: want <origin>+<hex8>+<base64 key>")
        name, hex8, b64 = parts
        if not valid_name(name):
            raise Failure(None, "bad --vkey: invalid key name")
        if not re.fullmatch(r"[0-9a-fA-F]{8}", hex8):
            raise Failure(None, "bad --vkey: key id is not 8 hex digits")
        try:
            raw = b64decode_strict(b64, "key")
        except ValueError as e:
            raise Failure(None, "bad --vkey: %s" % e)
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise Failure(None, "bad --vkey: not base64(0x01 || 32-byte Ed25519 key)")
        self.name = name
        self.public_key = raw[1:]
        self.key_id = key_id(name, self.public_key)
        if self.key_id.hex() != hex8.lower():
            raise Failure(None, "bad --vkey: key id %s does not match the name and key" % hex8)
        self.key_id_hex = self.key_id.hex()
        self.key = Ed25519PublicKey.from_public_bytes(self.public_key)

    def verify(self, signature, message):
        try:
            self.key.verify(signature, message)
            return True
        except InvalidSignature:
            return False


def open_checkpoint(note, vkey):
    """Verifies a C2SP signed checkpoint note; returns (origin, size, root)."""
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise Failure(None, "bad checkpoint: control character other than newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise Failure(None, "bad checkpoint: no blank line before the signatures")
    text = note[: split + 1]
    sigs = note[split + 2 :]
    if not sigs.endswith("\n"):
        raise Failure(None, "bad checkpoint: signature block must end with a newline")
    verified = False
    for line in sigs[:-1].split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise Failure(None, "bad checkpoint: signature line does not start with an em dash")
        name, sep, b64 = line[len(SIG_PREFIX) :].partition(" ")
        if not sep or not valid_name(name):
            raise Failure(None, "bad checkpoint: malformed signature line")
        try:
            raw = b64decode_strict(b64, "signature")
        except ValueError as e:
            raise Failure(None, "bad checkpoint: %s" % e)
        if len(raw) < 5:
            raise Failure(None, "bad checkpoint: signature too short")
        if name != vkey.name or raw[:4] != vkey.key_id:
            continue  # another key's signature (a witness, say): ignored, as C2SP says
        if len(raw) != 68 or not vkey.verify(raw[4:], text.encode("utf-8")):
            raise Failure(None, "the checkpoint signature by %s+%s does not verify" % (vkey.name, vkey.key_id_hex))
        verified = True
    if not verified:
        raise Failure(None, "the checkpoint has no signature by %s+%s" % (vkey.name, vkey.key_id_hex))
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise Failure(None, "bad checkpoint: want <origin>, <size> and <root> lines")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if any(not extra for extra in lines[3:]):
        raise Failure(None, "bad checkpoint: empty extension line")
    if origin != vkey.name:
        raise Failure(None, "the checkpoint origin %r is not the vkey's name %r" % (origin, vkey.name))
    if not re.fullmatch(r"0|[1-9][0-9]*", size_text):
        raise Failure(None, "bad checkpoint: size is not a decimal number")
    try:
        root = b64decode_strict(root_text, "root")
    except ValueError as e:
        raise Failure(None, "bad checkpoint: %s" % e)
    if len(root) != 32:
        raise Failure(None, "bad checkpoint: root is not 32 bytes")
    return origin, int(size_text), root


def leaf_hash(entry):
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


class CompactRange:
    """RFC 6962 tree over leaves appended one by one, in O(log n) memory: a stack of the
    roots of the complete subtrees the leaves so far split into, largest first."""

    def __init__(self):
        self.stack = []  # [(height, hash)], heights strictly decreasing
        self.size = 0

    def push(self, leaf):
        height, h = 0, leaf
        while self.stack and self.stack[-1][0] == height:
            _, left = self.stack.pop()
            h = node_hash(left, h)
            height += 1
        self.stack.append((height, h))
        self.size += 1

    def root(self):
        if not self.stack:
            return hashlib.sha256(b"").digest()
        h = self.stack[-1][1]
        for _, left in reversed(self.stack[:-1]):
            h = node_hash(left, h)
        return h


def _no_duplicates(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError("duplicate member %r" % k)
        obj[k] = v
    return obj


def _is_int(x):
    return type(x) is int  # bool is an int subclass in Python: reject it


def check_entry(seq, line, vkey, versions, last_at):
    """Checks one entry (line without its newline); returns its `at`."""
    try:
        obj = json.loads(line.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise Failure(seq, "not valid JSON: %s" % e)
    try:
        canonical = rfc8785.dumps(obj)
    except Exception as e:  # rfc8785 raises its own types (e.g. IntegerDomainError)
        raise Failure(seq, "no RFC 8785 canonical form: %s" % e)
    if canonical != line:
        raise Failure(seq, "not in RFC 8785 canonical form")
    if not isinstance(obj, dict):
        raise Failure(seq, "entry is not a JSON object")
    if set(obj) != ENTRY_FIELDS:
        missing = sorted(ENTRY_FIELDS - set(obj))
        extra = sorted(set(obj) - ENTRY_FIELDS)
        raise Failure(seq, "wrong fields (missing %s, unknown %s)" % (missing, extra))
    if not (_is_int(obj["v"]) and obj["v"] == 1):
        raise Failure(seq, "unsupported entry format version %r" % (obj["v"],))
    if not _is_int(obj["seq"]):
        raise Failure(seq, "seq is not an integer")
    if obj["seq"] != seq:
        raise Failure(seq, "found seq %d where seq %d belongs (an entry is missing or out of order)" % (obj["seq"], seq))
    stream = obj["stream"]
    if not isinstance(stream, str) or not STREAM.match(stream):
        raise Failure(seq, "stream %r is not a valid stream name" % (stream,))
    version = obj["version"]
    expected = versions.get(stream, 0) + 1
    if not _is_int(version) or version != expected:
        raise Failure(seq, "stream %s has version %r where %d belongs" % (stream, version, expected))
    versions[stream] = version
    at = obj["at"]
    if not isinstance(at, str) or not TIMESTAMP.match(at):
        raise Failure(seq, "at is not a canonical UTC timestamp")
    if last_at is not None and at < last_at:
        raise Failure(seq, "timestamp goes backwards")
    if not isinstance(obj["type"], str):
        raise Failure(seq, "type is not a string")
    if not isinstance(obj["actor"], dict) or not isinstance(obj["data"], dict):
        raise Failure(seq, "actor and data must be objects")
    if obj["signer"] != vkey.key_id_hex:
        raise Failure(seq, "signed by key %r but the vkey is %s" % (obj["signer"], vkey.key_id_hex))
    if seq == 0:
        if obj["type"] != GENESIS or stream != "ledger":
            raise Failure(0, "seq 0 is not ledger.initialized")
        data = obj["data"]
        if data.get("origin") != vkey.name or data.get("public_key") != base64.b64encode(vkey.public_key).decode("ascii"):
            raise Failure(0, "the genesis names another key or origin than the vkey")
    elif obj["type"] == GENESIS:
        raise Failure(seq, "a second ledger.initialized")
    sig_text = obj.pop("sig")
    if not isinstance(sig_text, str):
        raise Failure(seq, "sig is not a string")
    try:
        signature = b64decode_strict(sig_text, "sig")
    except ValueError as e:
        raise Failure(seq, str(e))
    if len(signature) != 64:
        raise Failure(seq, "sig is not a 64-byte Ed25519 signature")
    if not vkey.verify(signature, rfc8785.dumps(obj)):
        raise Failure(seq, "signature does not verify")
    return at


def verify(path, vkey_text, note):
    vkey = Vkey(vkey_text.strip())
    origin, size, root = open_checkpoint(note, vkey)
    tree = CompactRange()
    versions = {}
    last_at = None
    seq = 0
    with open(path, "rb") as f:
        for raw in f:  # binary mode: split at b"\n" only, one line in memory at a time
            if not raw.endswith(b"\n"):
                raise Failure(seq, "the last line is truncated (no final newline)")
            line = raw[:-1]
            last_at = check_entry(seq, line, vkey, versions, last_at)
            tree.push(leaf_hash(line))
            seq += 1
            if tree.size == size and tree.root() != root:
                raise Failure(seq - 1, "the Merkle root of entries 0..=%d differs from the checkpoint's" % (seq - 1))
    if seq < size:
        raise Failure(seq, "missing: the file ends here but the checkpoint covers %d entries" % size)
    if size == 0 and root != hashlib.sha256(b"").digest():
        raise Failure(None, "the checkpoint of size 0 does not have the empty root")
    return seq, size, root, tree.root()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Verify a keyledger log export independently.")
    parser.add_argument("file", help="the export (NDJSON from /v1/audit/export)")
    parser.add_argument("--vkey", required=True, help="verifier key <origin>+<hex8>+<base64>")
    parser.add_argument("--checkpoint", required=True, help="checkpoint note file (/v1/audit/checkpoint)")
    args = parser.parse_args(argv)
    try:
        with open(args.checkpoint, "rb") as f:
            note_bytes = f.read()
        try:
            note = note_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise Failure(None, "bad checkpoint: not UTF-8")
        entries, size, root, full_root = verify(args.file, args.vkey, note)
    except Failure as e:
        where = "FAIL seq %d: " % e.seq if e.seq is not None else "FAIL: "
        sys.stderr.write(where + e.reason + "\n")
        return 1
    except OSError as e:
        sys.stderr.write("FAIL: %s\n" % e)
        return 1
    msg = "OK: %d entries verified (canonical JCS, seq chain, stream versions, Ed25519 signatures); " \
          "Merkle root of the first %d matches the checkpoint (%s)" % (entries, size, base64.b64encode(root).decode())
    if entries > size:
        msg += "; %d entries past the checkpoint (seq %d..%d) are verified but not covered by it" % (entries - size, size, entries - 1)
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
