#!/bin/bash
# cdp-mount.sh: imgmount's cdp/ view of the journal the imgcdp filter writes: one
# directory per checkpoint, named by its UTC time, whose disk.raw is byte for byte what
# `imgrestore --at` that name writes, and the disk as it was at each recorded flush.
# Checkpoints journalled while mounted appear; the view is read-only; a record changed
# on the storage after the listing is EIO to a reader, never other bytes.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/cdp/cdp-lib.sh"
requires fusermount3 mountpoint imgmount python3
[[ -c /dev/fuse && -r /dev/fuse ]] || skip "/dev/fuse is not usable"
cdpj() { PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$top_srcdir/tests/lib" python3 "$top_srcdir/tests/cdp/cdpj.py" "$@"; }
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%S.%NZ; }

size=$((4 * 1048576 + 5000))
cdp_setup $size
cdp_start
cdp_io flush; cdp_mark 0
cdp_io 'write -P 0x11 100 5000' flush; cdp_mark 1
cdp_io 'write -P 0x22 65000 200000' 'write -z 1048576 131072' flush; cdp_mark 2
cdp_io 'discard 0 65536' "write -P 0x33 $((size - 3000)) 3000" flush; cdp_mark 3

mount_chain C
ls "$MNT" | grep -qx cdp || fail "no cdp/ in the mount: $(ls "$MNT")"

# every entry: the bytes imgrestore --at its name writes
check_all()
{
	local n names
	mapfile -t names < <(ls "$MNT/cdp")
	((${#names[@]} >= $1)) || fail "cdp/ lists ${#names[@]} checkpoints, expected $1 at least: ${names[*]}"
	for n in "${names[@]}"; do
		[[ $(ls "$MNT/cdp/$n") == disk.raw ]] || fail "cdp/$n holds $(ls "$MNT/cdp/$n")"
		[[ $(stat -c %s "$MNT/cdp/$n/disk.raw") == "$size" ]] || fail "cdp/$n/disk.raw: wrong size"
		expect_exit 0 imgrestore -q -P pass --at "$n" C r.at
		cmp r.at "$MNT/cdp/$n/disk.raw" || fail "cdp/$n/disk.raw differs from imgrestore --at $n"
		rm -f r.at
	done
}
# the entry for recorded flush k: the last name at or before its time (names sort by time)
check_mark()
{
	local t n pick=
	t=$(iso "${T[$1]}")
	for n in $(ls "$MNT/cdp"); do
		[[ $n > $t ]] || pick=$n
	done
	[[ -n $pick ]] || fail "no checkpoint listed at or before flush $1 ($t)"
	cmp "$MNT/cdp/$pick/disk.raw" "snap.$1" || fail "cdp/$pick/disk.raw is not the disk at flush $1"
}
check_all 4
for k in 0 1 2 3; do check_mark $k; done
! cmp -s snap.1 snap.2 && ! cmp -s snap.2 snap.3 || fail "the test's writes changed nothing"

# read-only
n=$(ls "$MNT/cdp" | head -n 1)
! (printf x >"$MNT/cdp/$n/disk.raw") 2>/dev/null || fail "cdp/$n/disk.raw was written"
! touch "$MNT/cdp/$n/new" 2>/dev/null || fail "a file was created in cdp/$n"
[[ ! -e $MNT/cdp/2000-01-01T00:00:00.000000000Z ]] || fail "an unknown time exists"

# checkpoints journalled while mounted appear
cdp_io 'write -P 0x44 2000000 70000' flush; cdp_mark 4
check_mark 4
check_all 5

# a record changed on the storage after the listing: EIO, not other bytes
cdp_io 'write -P 0x55 3000000 65536' flush; cdp_mark 5
cdp_io 'write -P 0x66 100000 4096' flush; cdp_mark 6
cdp_stop
t=$(iso "${T[5]}")
pick=
for n in $(ls "$MNT/cdp"); do [[ $n > $t ]] || pick=$n; done
i4=$(cdpj "$(cdp_journal)" at "${T[4]}")   # the records after it: flush 5's
python3 - "$MNT/cdp/$pick/disk.raw" "$top_srcdir" "$(cdp_journal)" "$i4" <<'PY' || fail "a changed record was served"
import errno, os, subprocess, sys
path, top, journal, after = sys.argv[1:]
fd = os.open(path, os.O_RDONLY)   # the checkpoint opened (verified) before the change
env = dict(os.environ, PYTHONPATH=top + "/tests/lib", PYTHONDONTWRITEBYTECODE="1")
subprocess.run(["python3", top + "/tests/cdp/cdpj.py", journal, "flip", after, "fix"], check=True, env=env)
try:
    while os.read(fd, 1 << 20):
        pass
except OSError as e:
    if e.errno == errno.EIO:
        sys.exit(0)
    raise
sys.exit("read the changed record without an error")
PY
expect_exit 4 imgrestore -q -P pass --at "${T[6]}" C r.bad
check_mark 4                     # before the change: still served
unmount_chain
no_tmp_files .
