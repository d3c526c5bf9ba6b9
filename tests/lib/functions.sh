#!/bin/bash
# functions.sh: helpers shared by the shell tests (in the manner of nbdkit's tests/functions.sh).
#
# Source it first thing in a test:   source "${top_srcdir:-.}/tests/lib/functions.sh"
# It sets `set -euo pipefail`, puts $top_builddir first on PATH (default /tmp/b when a test is run
# by hand), makes a per-test directory $TESTDIR (the current directory afterwards), removed with
# everything registered by cleanup_fn when the test exits, and sets a test passphrase in the
# environment.  Exit status of a test: 0 pass, 1 fail, 77 skip (automake conventions).
#
#   requires CMD...            skip (77) unless every CMD is on PATH
#   requires_root              skip unless running as root
#   requires_test_hooks        set HOOKS_PATH: $PATH with the test build of imgconsolidate first
#                              (tests/hooks/, built by make check, the only one with the hooks
#                              IMGCHAIN_TEST_CRASH_AT/_STALL_AT); fails (no skip) when missing
#   skip REASON / fail REASON  exit 77 / exit 1 with a message
#   cleanup_fn CMD [ARG]...    run CMD ARG... at exit (last registered runs first)
#   expect_exit CODE CMD...    run CMD; fail unless it exits CODE.  Its stdout/stderr are kept in
#                              $LAST_OUT / $LAST_ERR (files $TESTDIR/last.out, last.err)
#   expect_msg REGEX           fail unless the last command's stderr matches REGEX (grep -E)
#   expect_out REGEX           the same for its stdout
#   expect_no_msg REGEX        fail if the last command's stderr matches REGEX
#   sha_tree DIR               "sha256  ./path" for every file under DIR, sorted (compare two runs)
#   no_tmp_files DIR           fail if DIR holds in-progress files (.tmp-*, *.imgrestore-*)
#   mkrandom FILE SIZE_MIB SEED         SIZE_MIB MiB of deterministic pseudo-random bytes
#   mkrandom_bytes FILE BYTES SEED      the same, an exact byte count
#   write_at FILE OFFSET BYTES SEED     overwrite BYTES bytes at OFFSET with seeded random data
#   zero_at FILE OFFSET BYTES           overwrite with zeros (not a hole)
#   image_record_offset IMAGE N         "OFFSET LENGTH POS": the Nth (from 0) data record of IMAGE,
#                                       in index order, decoded from the index with python3 struct
#   image_record_of_pos IMAGE POS       "OFFSET LENGTH POS" of the record holding block POS
#   flip_bit FILE OFFSET [BIT]          invert one bit (default bit 0) of the byte at OFFSET
#   icimg_py [ARG]...                   run python3 (script on stdin) with the module `icimg`
#                                       importable: parse, edit and re-checksum image files
#   json_get FILE PYEXPR                print PYEXPR evaluated with j = the JSON of FILE
#   json_check FILE                     run the python3 script on stdin (asserts) with j = the JSON
#   point_count CHAIN                   number of restore points imginfo --json reports
#   restore_cmp CHAIN NAME EXPECTED     imgrestore NAME and cmp the result with EXPECTED
#   summary_bytes LABEL                 from imgbackup's summary in $LAST_OUT: bytes after LABEL
#                                       (e.g. "read"), converted from "1.5 MiB" to an integer

set -euo pipefail

: "${top_srcdir:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${top_builddir:=/tmp/b}"
top_srcdir=$(cd "$top_srcdir" && pwd)
top_builddir=$(cd "$top_builddir" && pwd)
export top_srcdir top_builddir
case ":$PATH:" in
*":$top_builddir:"*) ;;
*) PATH="$top_builddir:$PATH" ;;
esac
export PATH

TEST_NAME=$(basename "$0" .sh)

skip() { echo "SKIP: $TEST_NAME: $*" >&2; exit 77; }
fail() { echo "FAIL: $TEST_NAME: $*" >&2; exit 1; }

requires()
{
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || skip "requires $c"
	done
}

requires_root() { [[ $(id -u) -eq 0 ]] || skip "requires root"; }

requires_test_hooks()
{
	[[ -x $top_builddir/tests/hooks/imgconsolidate ]] ||
		fail "no $top_builddir/tests/hooks/imgconsolidate (the test build: make check builds it)"
	HOOKS_PATH=$top_builddir/tests/hooks:$PATH
}

requires python3

# ---- per-test directory and cleanup ---------------------------------------------------------
_cleanup_fns=()
cleanup_fn() { local q; printf -v q '%q ' "$@"; _cleanup_fns+=("$q"); }

_run_cleanup()
{
	local rc=$? i
	set +e
	for ((i = ${#_cleanup_fns[@]} - 1; i >= 0; i--)); do
		eval "${_cleanup_fns[i]}"
	done
	cd /
	[[ -n ${TESTDIR:-} && -d $TESTDIR ]] && rm -rf "$TESTDIR"
	return $rc
}
trap _run_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TESTDIR=$(mktemp -d "${TMPDIR:-/tmp}/imgchain-$TEST_NAME.XXXXXX")
cd "$TESTDIR"

# ---- environment: a known passphrase, nothing inherited ------------------------------------
export IMGCHAIN_PASSPHRASE="correct horse battery staple"
unset IMGCHAIN_PASSPHRASE_FILE IMGCHAIN_NEW_PASSPHRASE
export IMGCHAIN_KDF=interactive
# what the key holder remembers of each chain (rollback detection) stays inside the test
export IMGCHAIN_STATE_DIR=$TESTDIR/state
export LC_ALL=C

# ---- running commands -------------------------------------------------------------------------
LAST_OUT=
LAST_ERR=
LAST_RC=

expect_exit()
{
	local want=$1
	shift
	set +e
	"$@" >"$TESTDIR/last.out" 2>"$TESTDIR/last.err" </dev/null
	LAST_RC=$?
	set -e
	LAST_OUT=$(cat "$TESTDIR/last.out")
	LAST_ERR=$(cat "$TESTDIR/last.err")
	if [[ $LAST_RC -ne $want ]]; then
		echo "--- command: $*" >&2
		echo "--- stdout:" >&2
		cat "$TESTDIR/last.out" >&2
		echo "--- stderr:" >&2
		cat "$TESTDIR/last.err" >&2
		fail "'$*' exited $LAST_RC, expected $want"
	fi
}

expect_msg()
{
	grep -Eq -- "$1" "$TESTDIR/last.err" ||
		{ echo "--- stderr was:" >&2; cat "$TESTDIR/last.err" >&2; fail "stderr does not match /$1/"; }
}

expect_out()
{
	grep -Eq -- "$1" "$TESTDIR/last.out" ||
		{ echo "--- stdout was:" >&2; cat "$TESTDIR/last.out" >&2; fail "stdout does not match /$1/"; }
}

expect_no_msg()
{
	! grep -Eq -- "$1" "$TESTDIR/last.err" ||
		{ echo "--- stderr was:" >&2; cat "$TESTDIR/last.err" >&2; fail "stderr matches /$1/"; }
}

# ---- files -------------------------------------------------------------------------------------
sha_tree()
{
	(cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
}

no_tmp_files()
{
	local left
	left=$(find "$1" -maxdepth 1 \( -name '.tmp-*' -o -name '*.imgrestore-*' \) -printf '%f ')
	[[ -z $left ]] || fail "$1: in-progress files left behind: $left"
}

mkrandom_bytes()
{
	if (($2 <= 4194304)); then
		# a seeded slice of the pool: python3 starts slowly on a loaded machine
		rm -f "$1"
		: >"$1"
		write_at "$1" 0 "$2" "$3"
		return
	fi
	python3 - "$1" "$2" "$3" <<'EOF'
import random, sys
path, n, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r = random.Random(seed)
with open(path, "wb") as f:
    while n > 0:
        k = min(n, 1 << 22)
        f.write(r.randbytes(k))
        n -= k
EOF
}

mkrandom() { mkrandom_bytes "$1" $(($2 * 1048576)) "$3"; }

# Seeded data for write_at comes from a 4 MiB pool made once per test (python3 starts slowly).
_pool()
{
	[[ -f $TESTDIR/.pool ]] && return 0
	python3 -c 'import random, sys; sys.stdout.buffer.write(random.Random("pool").randbytes(4194304))' \
		>"$TESTDIR/.pool"
}

write_at()
{
	local file=$1 off=$2 n=$3 seed=$4 src
	if ((n > 4194304)); then
		python3 - "$@" <<'EOF'
import random, sys
path, off, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with open(path, "r+b") as f:
    f.seek(off)
    f.write(random.Random(seed).randbytes(n))
EOF
		return
	fi
	_pool
	src=$(($(cksum <<<"$seed" | cut -d' ' -f1) % (4194304 - n + 1)))
	dd if="$TESTDIR/.pool" of="$file" bs=65536 iflag=skip_bytes,count_bytes oflag=seek_bytes \
		skip=$src count=$n seek=$off conv=notrunc status=none
}

zero_at()
{
	dd if=/dev/zero of="$1" bs=65536 iflag=count_bytes oflag=seek_bytes count="$3" seek="$2" \
		conv=notrunc status=none
}

flip_bit()
{
	local file=$1 off=$2 bit=${3:-0} b
	b=$(od -An -tu1 -j "$off" -N1 "$file" | tr -d ' ')
	[[ -n $b ]] || fail "flip_bit: $file: offset $off is past the end"
	printf "\\$(printf %03o $((b ^ (1 << bit))))" |
		dd of="$file" bs=1 seek="$off" count=1 conv=notrunc status=none
}

# ---- the image format, from python (layout: format/imgchain_format.h) -------------------------
_icimg_lib()
{
	[[ -f $TESTDIR/.pylib/icimg.py ]] && return 0
	mkdir -p "$TESTDIR/.pylib"
	cat >"$TESTDIR/.pylib/icimg.py" <<'EOF'
"""icimg: read, edit and rewrite imgchain image files (layout of format/imgchain_format.h)."""
import ctypes, struct

_x = ctypes.CDLL("libxxhash.so.0")
_x.XXH3_64bits.restype = ctypes.c_uint64
_x.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


class _H128(ctypes.Structure):
    _fields_ = [("low64", ctypes.c_uint64), ("high64", ctypes.c_uint64)]


_x.XXH3_128bits.restype = _H128
_x.XXH3_128bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def xxh64(b):
    b = bytes(b)
    return _x.XXH3_64bits(b, len(b))


def xxh128(b):
    """XXH3-128 in XXH128_canonicalFromHash form (what the library stores)."""
    b = bytes(b)
    h = _x.XXH3_128bits(b, len(b))
    return struct.pack(">QQ", h.high64, h.low64)


HEADER_SIZE, SLOT_A, SLOT_B = 4096, 1024, 2048
HDR_FMT = "<8sII16s16sIIII440sQ"
HDR_KEYS = ("magic version header_size chain_id key_check block_size cipher compress reserved0 "
            "reserved hdr_hash").split()
# slot: point_id and seal_keygen are v2's (zero in v1)
SLOT_FMT = "<QIIIIqQQQQQQ16s32s128sQQH230sQ"
SLOT_KEYS = ("generation seq parent_seq kind flags created disk_size index_offset index_count "
             "data_bytes n_data n_zero index_hash seal name data_end point_id seal_keygen "
             "reserved slot_hash").split()
# entries: v1 has flags at 30 and entry_hash at 56, v2 keygen and origin_id
ENT_FMT = "<QQIIIHHQ16sQ"
ENT_KEYS_V1 = "pos offset stored_len plain_len origin kind flags rec_hash digest entry_hash".split()
ENT_KEYS_V2 = "pos offset stored_len plain_len origin kind keygen rec_hash digest origin_id".split()
ENT_KEYS = ENT_KEYS_V1
ZERO, RAW, ZSTD = 0, 1, 2
assert struct.calcsize(HDR_FMT) == 512 and struct.calcsize(SLOT_FMT) == 512
assert struct.calcsize(ENT_FMT) == 64


def ent_keys(version):
    return ENT_KEYS_V1 if version == 1 else ENT_KEYS_V2


def entry_pack(e, version=1, fix=True):
    """The 64 bytes of entry e; v1 with fix: entry_hash recomputed (v2 has none)."""
    if version != 1:
        return struct.pack(ENT_FMT, *[e[k] for k in ENT_KEYS_V2])
    raw = struct.pack(ENT_FMT, *[e[k] if k != "entry_hash" else 0 for k in ENT_KEYS_V1])
    if not fix:
        return raw[:56] + struct.pack("<Q", e["entry_hash"])
    return raw[:56] + struct.pack("<Q", xxh64(raw[:56]))


def header_pack(h):
    raw = struct.pack(HDR_FMT, *[h[k] if k != "hdr_hash" else 0 for k in HDR_KEYS])
    return raw[:504] + struct.pack("<Q", xxh64(raw[:504]))


def slot_pack(s):
    raw = struct.pack(SLOT_FMT, *[s[k] if k != "slot_hash" else 0 for k in SLOT_KEYS])
    return raw[:504] + struct.pack("<Q", xxh64(raw[:504]))


class Image:
    """One image file.  entries: list of dicts (ENT_KEYS + 'record': the stored bytes)."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.data = f.read()
        self.header = dict(zip(HDR_KEYS, struct.unpack(HDR_FMT, self.data[:512])))
        self.version = self.header["version"]
        slots = []
        for off in (SLOT_A, SLOT_B):
            raw = self.data[off:off + 512]
            s = dict(zip(SLOT_KEYS, struct.unpack(SLOT_FMT, raw)))
            ok = s["generation"] and s["slot_hash"] == xxh64(raw[:504])
            slots.append((s["generation"] if ok else -1, off, s))
        gen, self.slot_off, self.slot = max(slots, key=lambda t: t[0])
        if gen < 0:
            raise ValueError("%s: no valid slot" % path)
        s = self.slot
        self.name = s["name"].rstrip(b"\0").decode()
        self.entries = []
        for i in range(s["index_count"]):
            off = s["index_offset"] + 64 * i
            e = dict(zip(ent_keys(self.version),
                         struct.unpack(ENT_FMT, self.data[off:off + 64])))
            e["record"] = self.data[e["offset"]:e["offset"] + e["stored_len"]]
            self.entries.append(e)

    def data_entries(self):
        return [e for e in self.entries if e["kind"] != ZERO]

    def entry(self, pos):
        for e in self.entries:
            if e["pos"] == pos:
                return e
        raise KeyError("%s: no entry for block %d" % (self.path, pos))

    def _patch(self, off, raw):
        with open(self.path, "r+b") as f:
            f.seek(off)
            f.write(raw)

    def write_header(self):
        """Write self.header back in place, with a correct checksum."""
        self._patch(0, header_pack(self.header))

    def write_slot(self):
        """Write self.slot back in place (no field recomputed but the checksum)."""
        self._patch(self.slot_off, slot_pack(self.slot))

    def write_entry(self, e):
        """Write entry e back in place at its index position, with a correct entry checksum;
        the index checksum in the slot is recomputed and the slot written too."""
        i = self.entries.index(e)
        off = self.slot["index_offset"] + 64 * i
        self._patch(off, entry_pack(e, self.version))
        with open(self.path, "rb") as f:
            f.seek(self.slot["index_offset"])
            index = f.read(64 * self.slot["index_count"])
        self.slot["index_hash"] = xxh128(index)
        self.write_slot()

    def write(self, path=None, fix=True):
        """Lay the file out anew: header, both slots (the current one refreshed), records in
        index order, index.  With fix, every checksum (rec_hash kept as given) is recomputed."""
        out = bytearray(self.data[:HEADER_SIZE])
        out[:512] = header_pack(self.header) if fix else out[:512]
        for e in self.entries:
            if e["kind"] == ZERO:
                e["offset"] = 0
                continue
            e["offset"] = len(out)
            out += e["record"]
        s = self.slot
        s["index_offset"] = len(out)
        s["index_count"] = len(self.entries)
        s["n_data"] = len(self.data_entries())
        s["n_zero"] = s["index_count"] - s["n_data"]
        s["data_bytes"] = sum(e["stored_len"] for e in self.data_entries())
        index = b"".join(entry_pack(e, self.version, fix) for e in self.entries)
        out += index
        s["data_end"] = len(out)
        if fix:
            s["index_hash"] = xxh128(index)
        out[self.slot_off:self.slot_off + 512] = slot_pack(s)
        with open(path or self.path, "wb") as f:
            f.write(out)
EOF
}

icimg_py()
{
	_icimg_lib
	PYTHONPATH="$TESTDIR/.pylib${PYTHONPATH:+:$PYTHONPATH}" python3 - "$@"
}

image_record_offset()
{
	icimg_py "$1" "$2" <<'EOF'
import sys, icimg
d = icimg.Image(sys.argv[1]).data_entries()
n = int(sys.argv[2])
if n >= len(d):
    sys.exit("image_record_offset: %s has only %d data records" % (sys.argv[1], len(d)))
print(d[n]["offset"], d[n]["stored_len"], d[n]["pos"])
EOF
}

image_record_of_pos()
{
	icimg_py "$1" "$2" <<'EOF'
import sys, icimg
e = icimg.Image(sys.argv[1]).entry(int(sys.argv[2]))
if e["kind"] == icimg.ZERO:
    sys.exit("image_record_of_pos: block %s of %s is a zero entry" % (sys.argv[2], sys.argv[1]))
print(e["offset"], e["stored_len"], e["pos"])
EOF
}

# set_entry_pos IMAGE N P: relabel the index entry of block N as block P, checksums fixed up
set_entry_pos()
{
	icimg_py "$@" <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
e = i.entry(int(sys.argv[2]))
e["pos"] = int(sys.argv[3])
i.write_entry(e)
EOF
}

# ---- tools ---------------------------------------------------------------------------------------
# json_check FILE: run the python3 script on stdin with j = the JSON of FILE (use assert).
json_check()
{
	python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
exec(compile(sys.stdin.read(), "json_check", "exec"))' "$1" || fail "json_check on $1 failed"
}

json_get()
{
	python3 - "$1" "$2" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))
EOF
}

point_count()
{
	imginfo --json "$1" >"$TESTDIR/.pc.json" || fail "imginfo --json $1 failed"
	json_get "$TESTDIR/.pc.json" 'len(j["points"])'
}

restore_cmp()
{
	local out="$TESTDIR/.restore.$$"
	rm -f "$out"
	imgrestore -q "$1" "$2" "$out" || fail "imgrestore $1 $2 failed"
	cmp "$out" "$3" || fail "restore of '$2' differs from $3"
	rm -f "$out"
}

summary_bytes()
{
	python3 - "$1" "$TESTDIR/last.out" <<'EOF'
import re, sys
text = open(sys.argv[2]).read()
m = re.search(r"\b%s ([0-9.]+) (B|KiB|MiB|GiB|TiB)\b" % re.escape(sys.argv[1]), text)
if not m:
    sys.exit("summary_bytes: no '%s N UNIT' in: %s" % (sys.argv[1], text))
mult = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[m.group(2)]
print(int(float(m.group(1)) * mult))
EOF
}
