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
#   icimg_py [ARG]...                   run python3 (script on stdin) with tests/lib/icimg.py
#                                       importable: parse, edit and re-checksum image files and
#                                       key files
#   json_get FILE PYEXPR                print PYEXPR evaluated with j = the JSON of FILE
#   json_check FILE                     run the python3 script on stdin (asserts) with j = the JSON
#   point_count CHAIN                   number of restore points imginfo --json reports
#   restore_cmp CHAIN NAME EXPECTED     imgrestore NAME and cmp the result with EXPECTED
#   summary_bytes LABEL                 from imgbackup's summary in $LAST_OUT: bytes after LABEL
#                                       (e.g. "read"), converted from "1.5 MiB" to an integer
#   kill_quiet PID [SIGNAL]             SIGNAL (default TERM) to PID if it still runs
#   fuse_usable, mount_chain CHAIN [OPT]..., unmount_chain, check_sanitizers LOG
#                                       the one way the tests mount a chain (see that section)
# The image format's helpers in python are tests/lib/icimg.py (icimg_py puts it on the path).

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
fail()
{
	echo "FAIL: $TEST_NAME: $*" >&2
	# a mount's daemon log (mount_chain) tells why a read went wrong
	[[ ! -s ${MOUNT_LOG:-} ]] || sed 's/^/  imgmount: /' "$MOUNT_LOG" >&2
	exit 1
}

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
icimg_py()
{
	PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$top_srcdir/tests/lib${PYTHONPATH:+:$PYTHONPATH}" \
		python3 - "$@"
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

# ---- imgmount (the one way the tests mount a chain) ---------------------------------------------
# MNT (default $TESTDIR/mnt) is the mount point, MOUNT_LOG the daemon's stderr, MOUNT_PID its pid.
#   fuse_usable                 true when /dev/fuse, fusermount3, mountpoint and imgmount are there
#   mount_chain CHAIN [OPT]...  imgmount -f OPT... CHAIN $MNT in the background, MOUNT_LOG emptied
#                               first; returns when mounted, fails if the daemon dies first.
#                               MOUNT_ENV=(VAR=VALUE...) goes into the daemon's environment only
#   unmount_chain               fusermount3 -u; fails unless the daemon exits 0, the mount is gone
#                               and a sanitizer build of the daemon reported nothing in MOUNT_LOG
#   check_sanitizers LOG        fail if a sanitizer (TSan, ASan, LSan, UBSan) reported in LOG
# A mount still up when the test exits is unmounted (lazily if busy) and its daemon killed.
MNT=${MNT:-$TESTDIR/mnt}
MOUNT_LOG=$TESTDIR/mount.log
MOUNT_PID=
MOUNT_ENV=()

fuse_usable()
{
	[[ -c /dev/fuse && -r /dev/fuse ]] && command -v fusermount3 >/dev/null &&
		command -v mountpoint >/dev/null && command -v imgmount >/dev/null
}

_unmount_quiet()
{
	if mountpoint -q "$MNT" 2>/dev/null || grep -q " $MNT " /proc/self/mounts 2>/dev/null; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null || true
	fi
	if [[ -n $MOUNT_PID ]]; then
		kill "$MOUNT_PID" 2>/dev/null || true
		wait "$MOUNT_PID" 2>/dev/null || true
		MOUNT_PID=
	fi
	return 0
}
cleanup_fn _unmount_quiet

mount_chain()
{
	local chain=$1 i
	shift
	mkdir -p "$MNT"
	: >"$MOUNT_LOG"
	env "${MOUNT_ENV[@]}" imgmount -f "$@" "$chain" "$MNT" 2>>"$MOUNT_LOG" </dev/null &
	MOUNT_PID=$!
	for ((i = 0; i < 400; i++)); do
		mountpoint -q "$MNT" && return 0
		if ! kill -0 "$MOUNT_PID" 2>/dev/null; then
			wait "$MOUNT_PID" || true
			MOUNT_PID=
			fail "imgmount died before mounting: $(cat "$MOUNT_LOG")"
		fi
		sleep 0.05
	done
	fail "imgmount not ready after 20 s"
}

check_sanitizers()
{
	[[ -f $1 ]] || return 0
	! grep -qE 'WARNING: ThreadSanitizer|ERROR: (Address|Leak)Sanitizer|runtime error:' "$1" ||
		fail "a sanitizer reported an error in $1: $(cat "$1")"
}

unmount_chain()
{
	fusermount3 -u "$MNT" || fail "fusermount3 -u failed"
	wait "$MOUNT_PID" || fail "imgmount exited with status $?: $(cat "$MOUNT_LOG")"
	MOUNT_PID=
	! mountpoint -q "$MNT" || fail "still mounted"
	check_sanitizers "$MOUNT_LOG"
}

# kill_quiet PID [SIGNAL]: send SIGNAL (default TERM) to PID if it still runs (for cleanup_fn)
kill_quiet() { kill -s "${2:-TERM}" "$1" 2>/dev/null || true; }
