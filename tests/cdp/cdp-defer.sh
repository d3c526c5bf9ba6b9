#!/bin/bash
# cdp-defer.sh: the filter's deferred capture.  A block a request does not cover whole (a
# small or unaligned write's edges, a trim) is journalled at the next flush, read back from
# the disk as it then is, once however often the guest wrote it; blocks a write or zero
# covers whole are journalled at once.  Every checkpoint still restores exactly when the
# two kinds mix on one block within an interval, in the disk's short last block, past the
# filter's bound on deferred blocks (32 MiB: journalled by the write that passes it), and
# after a FUA write (durable at its acknowledgement, SIGKILL right after).  Rewrites of one
# block within an interval make one record.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/cdp/cdp-lib.sh"
requires python3

size=$((40 * 1048576 + 5000))           # 641 blocks of 64 KiB, the last 5000 bytes
cdp_setup $size
cdp_start
bs=65536
cdpj() { PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$top_srcdir/tests/lib" python3 "$top_srcdir/tests/cdp/cdpj.py" "$@"; }

cdp_io flush; cdp_mark 0
# one block written 16 times in 4 KiB pieces, then part of it again: one record (the flush's)
cmds=()
for i in $(seq 0 15); do cmds+=("write -P $((i + 1)) $((bs * 3 + i * 4096)) 4096"); done
cdp_io "${cmds[@]}" "write -P 0x77 $((bs * 3 + 1000)) 100" flush; cdp_mark 1
b=
for ((k = $(cdpj "$(cdp_journal)" at "${T[0]}") + 1; k <= $(cdpj "$(cdp_journal)" at "${T[1]}"); k++)); do
	b+=$(cdpj "$(cdp_journal)" blocks "$k" | tr '\n' ' ')
done
[[ $b == "3 " ]] || fail "17 writes to block 3 in one interval: records of blocks '$b'"
# a whole-block write (journalled at once) then a partial rewrite of it (deferred), an
# unaligned write (edges deferred, middle at once), a trim and a zero across block edges
cdp_io "write -P 0x21 $((bs * 8)) $((bs * 2))" "write -P 0x22 $((bs * 9 + 500)) 700" \
	"write -P 0x23 $((bs * 12 + 999)) $((bs * 3))" "discard $((bs * 20 + 4096)) $((bs * 2))" \
	"write -z $((bs * 30 + 100)) $((bs * 2))" "write -P 0x24 $((bs * 31)) 10" flush; cdp_mark 2
# the short last block: zeroed whole (at once), then written in part (deferred)
cdp_io "write -z $((size - 5000)) 5000" "write -P 0x31 $((size - 3000)) 1000" flush; cdp_mark 3
# more than 32 MiB deferred: 600 blocks written in part without a flush
cmds=()
for i in $(seq 0 599); do cmds+=("write -P $((i % 200 + 1)) $((i * bs + 8192)) 4096"); done
cdp_io "${cmds[@]}" flush; cdp_mark 4
# FUA: acknowledged only once journalled; then SIGKILL, no flush
cdp_io "write -P 0x41 $((bs * 5 + 300)) 5000" "write -f -P 0x42 $((bs * 6 + 300)) 5000"
cdp_mark 5
kill -9 "$NBDKIT_PID"
wait "$NBDKIT_PID" 2>/dev/null || true
NBDKIT_PID=
cdp_check 0 1 2 3 4 5
! cmp -s snap.0 snap.1 && ! cmp -s snap.3 snap.4 && ! cmp -s snap.4 snap.5 ||
	fail "the test's writes changed nothing"
