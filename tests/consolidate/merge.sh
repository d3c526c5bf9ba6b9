#!/bin/bash
# merge.sh: a realistic disk, a full + 10 incrementals + a branch; merge into the full, a
# range across a branch point, retention; after each, every remaining point restores
# byte-identical, imgverify --data passes and the chain shrank.  All keyless.
source "${top_srcdir:-.}/tests/consolidate/cons-lib.sh"

# usage errors: exit status 2
expect_exit 2 imgconsolidate
expect_exit 2 imgconsolidate "$TESTDIR"
expect_msg "nothing to do"
expect_exit 2 imgconsolidate --keep-last 0 "$TESTDIR"
expect_exit 2 imgconsolidate --merge a..b --keep-daily 3 "$TESTDIR"
expect_exit 2 imgconsolidate --bogus "$TESTDIR"
expect_exit 0 imgconsolidate --help
expect_out "keep-weekly"

make_real_chain 64
keyless_expect 1 --merge p05..p02 "$CHAIN"
expect_msg "'p05' is not an ancestor of 'p02'"
keyless_expect 1 --merge p01..nosuch "$CHAIN"
expect_msg "no such pair"

# a dry run prints the plan and changes nothing
before=$(sha_tree "$CHAIN")
keyless_expect 0 --dry-run --merge p00..p03 "$CHAIN"
expect_out "merge +00000002 .* p01 +-> into 'p03'"
expect_out "synthetic full"
[[ $(sha_tree "$CHAIN") == "$before" ]] || fail "--dry-run changed the chain"

# into the full: p03 becomes a synthetic full written in place in the full's file
a0=$(alloc_kib)
# (IMGCHAIN_CONS_ISLANDS=1: the full's records left between superseded ones are moved
# whatever the file system, so that the check of every point below covers them)
IMGCHAIN_CONS_ISLANDS=1 keyless_expect 0 --merge p00..p03 "$CHAIN"
expect_out "3 points merged"
expect_out "^  of the bytes copied, [0-9.]+ [KM]iB are the full's own records moved"
# where the time went: six phases, none negative (the wait for the punching thread,
# which overlaps the removals, is punch time, not finish time)
expect_out "^  time: plan [0-9.]+ s, copy [0-9.]+ s, sync [0-9.]+ s, commit [0-9.]+ s, finish [0-9.]+ s, punch [0-9.]+ s$"
[[ $(point_names) == "br p03 p04 p05 p06 p07 p08 p09 p10" ]] || fail "points: $(point_names)"
[[ $(point_field p03 kind) == synthetic-full ]] || fail "p03 is $(point_field p03 kind)"
[[ $(point_field p03 file) == 00000004.img ]] || fail "p03 lives in $(point_field p03 file)"
check_points br p03 p04 p05 p06 p07 p08 p09 p10
a1=$(alloc_kib)
((a1 < a0)) || fail "chain did not shrink: $a0 KiB -> $a1 KiB"
no_tmp_files "$CHAIN"
[[ ! -e $CHAIN/journal ]] || fail "journal left behind"

# a range across a branch point: p05 has the branch br, which is rebased onto p03.  br
# gains copies of the blocks of p04 and p05 it used: the chain grows by at most their size
dup=$(du -sk "$CHAIN/00000005.img" "$CHAIN/00000006.img" | awk '{s += $1} END {print s}')
keyless_expect 0 --merge p04..p06 "$CHAIN"
[[ $(point_names) == "br p03 p06 p07 p08 p09 p10" ]] || fail "points: $(point_names)"
[[ $(point_field br parent) == p03 && $(point_field br kind) == consolidated ]] ||
	fail "br: parent $(point_field br parent), kind $(point_field br kind)"
[[ $(point_field p06 parent) == p03 ]] || fail "p06 parent $(point_field p06 parent)"
check_points br p03 p06 p07 p08 p09 p10
a2=$(alloc_kib)
((a2 < a1 + dup)) || fail "chain grew more than the rebased blocks: $a1 KiB -> $a2 KiB"

# retention: the three newest (br, p10, p09); p03 holds two kept branches: kept
keyless_expect 0 --keep-last 3 "$CHAIN"
[[ $(point_names) == "br p03 p09 p10" ]] || fail "points: $(point_names)"
[[ $(point_field p09 parent) == p03 ]] || fail "p09 parent $(point_field p09 parent)"
check_points br p03 p09 p10
a3=$(alloc_kib)
((a3 < a2)) || fail "chain did not shrink: $a2 KiB -> $a3 KiB"

# the newest only: br takes p03 in place; p09 and p10, on another branch, go
keyless_expect 0 --keep-last 1 "$CHAIN"
expect_out "2 removed"
[[ $(point_names) == "br" ]] || fail "points: $(point_names)"
[[ $(point_field br kind) == synthetic-full ]] || fail "br is $(point_field br kind)"
check_points br
no_tmp_files "$CHAIN"
a4=$(alloc_kib)
((a4 < a3)) || fail "chain did not shrink: $a3 KiB -> $a4 KiB"
echo "allocation: $a0 -> $a1 -> $a2 -> $a3 -> $a4 KiB"
