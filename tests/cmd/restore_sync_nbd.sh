#!/bin/bash
# restore_sync_nbd.sh: imgrestore --sync and --sync-from onto an NBD export (nbdkit's file
# plugin over a file, behind its log filter, on a Unix socket).  The export ends holding the
# point; nbdkit's log shows exactly the differing data blocks written, the differing zero
# blocks sent as WRITE_ZEROES, all of the disk read by --sync and nothing read by
# --sync-from; strace shows exactly the differing blocks' records read from the chain.  A
# plain restore to a URI is refused; an export smaller than the disk too.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/cmd/restore_sync_lib.sh"
requires imgbackup imgrestore nbdkit strace cmp python3

bs=65536
size=$((5 * 1048576))
two_points $size "1 33 34 70" 50

# serve FILE: nbdkit on $PWD/sock over FILE, requests logged to nbd.log; sets URI
serve()
{
	rm -f sock nbdkit.pid
	: >nbd.log
	nbdkit -U "$PWD/sock" -P "$PWD/nbdkit.pid" --filter=log file "$1" logfile="$PWD/nbd.log" ||
		fail "nbdkit did not start"
	for ((i = 0; i < 100; i++)); do [[ -s nbdkit.pid && -S sock ]] && break; sleep 0.05; done
	cleanup_fn kill_quiet "$(cat nbdkit.pid)"
	URI="nbd+unix:///?socket=$PWD/sock"
}

# ---- onto an export full of zeros, then --sync-from, then damage ------------------------------
truncate -s $((6 * 1048576)) export.img
serve export.img
traced_sync /dev/null s1 nbd:nbd.log "$I1" -- --sync C p1 "$URI"
cmp -n $size export.img s1 || fail "--sync onto a zeroed export: it does not hold p1"
head -c $size export.img >before
traced_sync before s2 nbd:nbd.log "$I2" -- --sync-from p1 C p2 "$URI"
cmp -n $size export.img s2 || fail "--sync-from p1 onto the export: it does not hold p2"
python3 - export.img <<'EOF'
import random, sys
r = random.Random("nbddamage")
with open(sys.argv[1], "r+b") as f:
    for off in [11 * 65536 + 1, 50 * 65536 + 7, 34 * 65536 + 40000]:
        f.seek(off)
        f.write(r.randbytes(100))
EOF
head -c $size export.img >before
traced_sync before s2 nbd:nbd.log "$I2" -- --sync C p2 "$URI"
cmp -n $size export.img s2 || fail "--sync onto a damaged export: it does not hold p2"

# ---- refusals -----------------------------------------------------------------------------------
expect_exit 1 imgrestore C p2 "$URI"
expect_msg "^imgrestore: $(printf '%s' "$URI" | sed 's/[?+.]/\\&/g'): an NBD export is written with --sync or --sync-from$"
kill "$(cat nbdkit.pid)"
truncate -s $((4 * 1048576)) small.img
serve small.img
expect_exit 1 imgrestore --sync C p2 "$URI"
expect_msg "export is smaller than the disk \($size bytes\)$"
