# adv-lib.sh: shared setup of the adversarial tests (sourced, never run by itself).
#
#   make_chain               C: p1 (full) of s1, p2 (incremental of p1) of s2, p3 (branch off p1)
#                            of s3.  s1 is 1000000 bytes: 16 blocks of 64 KiB, the last one
#                            16960 bytes; block 4 is zero.  p2 changes blocks 2, 3, 9 and 15;
#                            p3 changes block 12.  A copy of the chain is kept in `pristine`.
#   fresh                    C back to the pristine copy (and a fresh state directory)
#   snap [DIR...]            remember sha256 of every file of C and of each DIR
#                            (default: C, the key holder's state)
#   unchanged WHAT           fail unless every file snap remembered is byte-identical
#   block_range POS SIZE     "START END" (end exclusive) of block POS in a disk of SIZE bytes
#   mount_check CHAIN POINT SRC [POS...]
#                            mount CHAIN (imgmount -f), then read POINT's disk.raw: every block
#                            POS gives EIO (a read of the whole block and a 10-byte read inside
#                            it), every other byte equals SRC; unmount.  Skipped (with a note)
#                            when FUSE is not usable.
#   mount_point_eio CHAIN POINT REGEX
#                            mount CHAIN: opening POINT's disk.raw fails with EIO and the
#                            daemon's log matches REGEX (a point whose seal fails is not served)
#   mount_refused CODE REGEX CHAIN
#                            imgmount CHAIN exits CODE with REGEX on stderr and mounts nothing
#   expect_clean_rc          the last command ended by itself (no signal, no sanitizer report)
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imgverify imginfo cmp

B=65536
SIZE=1000000

make_chain()
{
	mkrandom_bytes s1 $SIZE one
	zero_at s1 $((4 * B)) $B
	# block 7 compresses (zstd records), the others are stored raw
	python3 -c 'import sys; sys.stdout.buffer.write(b"compressible text line\n" * 2849 + b"x" * 9)' \
		| dd of=s1 bs=$B seek=7 conv=notrunc status=none
	cp s1 s2
	for b in 2 3 9; do write_at s2 $((b * B + 1000)) 3000 two$b; done
	write_at s2 $((15 * B + 100)) 100 two15
	cp s1 s3
	write_at s3 $((12 * B + 5)) 100 three
	expect_exit 0 imgbackup -q --name p1 C s1
	expect_exit 0 imgbackup -q --name p2 C s2
	expect_exit 0 imgbackup -q --name p3 --parent p1 C s3
	rm -rf pristine pristine-state
	cp -a C pristine
	cp -a "$IMGCHAIN_STATE_DIR" pristine-state
}

fresh()
{
	rm -rf C "$IMGCHAIN_STATE_DIR"
	cp -a pristine C
	cp -a pristine-state "$IMGCHAIN_STATE_DIR"
}

_SNAP_DIRS=()
_SNAP=
_snap_now()
{
	local d
	for d in "${_SNAP_DIRS[@]}"; do
		echo "== $d"
		[[ -e $d ]] && sha_tree "$d"
	done
	return 0
}

snap()
{
	if (($# == 0)); then
		_SNAP_DIRS=(C "$IMGCHAIN_STATE_DIR")
	else
		_SNAP_DIRS=("$@")
	fi
	_SNAP=$(_snap_now)
}

unchanged()
{
	local now
	now=$(_snap_now)
	[[ $now == "$_SNAP" ]] ||
		fail "$1 changed files: $(diff <(echo "$_SNAP") <(echo "$now") | grep '^[<>]' | tr '\n' ' ')"
}

block_range()
{
	local start=$(($1 * B)) end=$((($1 + 1) * B))
	((end <= $2)) || end=$2
	echo "$start $end"
}

expect_clean_rc()
{
	((LAST_RC < 128)) || fail "the last command died of signal $((LAST_RC - 128))"
	expect_no_msg "AddressSanitizer|LeakSanitizer|runtime error:|Segmentation|Aborted"
}

mount_check()
{
	local chain=$1 point=$2 src=$3
	shift 3
	if ! fuse_usable; then
		echo "note: FUSE not usable here, mount checks of '$point' not run"
		return 0
	fi
	mount_chain "$chain"
	python3 - "$TESTDIR/mnt/$point/disk.raw" "$src" "$B" "$@" <<'EOF' ||
import errno, os, sys
path, src, bs = sys.argv[1], open(sys.argv[2], "rb").read(), int(sys.argv[3])
bad = sorted(int(p) for p in sys.argv[4:])
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
assert size == len(src), "disk.raw is %d bytes, the source %d" % (size, len(src))

def eio(off, n):
    try:
        os.pread(fd, n, off)
    except OSError as e:
        assert e.errno == errno.EIO, "read %d@%d: %s, expected EIO" % (n, off, e)
        return
    raise SystemExit("read of %d bytes at %d did not fail" % (n, off))

# the damaged blocks: EIO for the whole block and inside it
for p in bad:
    start, end = p * bs, min((p + 1) * bs, size)
    eio(start, end - start)
    eio(start + (end - start) // 2, 10)
    eio(end - 1, 1)
# everything else, in pieces that stop at the damaged blocks, reads correctly; the bytes just
# before and just after each damaged block read alone
edges = [0] + [x for p in bad for x in (p * bs, min((p + 1) * bs, size))] + [size]
for i in range(0, len(edges), 2):
    off, end = edges[i], edges[i + 1]
    while off < end:
        n = min(bs, end - off)
        got = os.pread(fd, n, off)
        assert got == src[off:off + n], "wrong bytes at %d" % off
        off += n
for p in bad:
    if p > 0:
        assert os.pread(fd, 1, p * bs - 1) == src[p * bs - 1:p * bs], "byte before block %d" % p
    if (p + 1) * bs < size:
        assert os.pread(fd, 1, (p + 1) * bs) == src[(p + 1) * bs:(p + 1) * bs + 1], \
            "byte after block %d" % p
EOF
		fail "mount of '$point': wrong EIO ranges or bytes"
	local pos
	for pos in "$@"; do
		grep -q "restore point '$point', block $pos " "$TESTDIR/mount.log" ||
			fail "imgmount did not log the damage of '$point' block $pos: $(cat "$TESTDIR/mount.log")"
	done
	unmount_chain
}

mount_point_eio()
{
	local chain=$1 point=$2 re=$3
	if ! fuse_usable; then
		echo "note: FUSE not usable here, mount checks of '$point' not run"
		return 0
	fi
	mount_chain "$chain"
	python3 - "$TESTDIR/mnt/$point/disk.raw" <<'EOF' || fail "mount: '$point' was served"
import errno, os, sys
try:
    fd = os.open(sys.argv[1], os.O_RDONLY)
    os.pread(fd, 4096, 0)
except OSError as e:
    assert e.errno == errno.EIO, e
    sys.exit(0)
sys.exit("%s opened and read" % sys.argv[1])
EOF
	grep -Eq -- "$re" "$TESTDIR/mount.log" ||
		fail "imgmount's log does not match /$re/: $(cat "$TESTDIR/mount.log")"
	unmount_chain
}

mount_refused()
{
	local code=$1 re=$2 chain=$3
	if ! fuse_usable; then
		echo "note: FUSE not usable here, imgmount refusal not checked"
		return 0
	fi
	mkdir -p "$TESTDIR/mnt"
	expect_exit "$code" imgmount "$chain" "$TESTDIR/mnt"
	expect_msg "$re"
	if mountpoint -q "$TESTDIR/mnt"; then
		fusermount3 -u "$TESTDIR/mnt"
		fail "imgmount mounted $chain"
	fi
}
