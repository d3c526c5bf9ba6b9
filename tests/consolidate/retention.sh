#!/bin/bash
# retention.sh: --keep-* rules on points made at chosen UTC times (imgbackup run with a
# preloaded time() that returns $FAKE_TIME): the plan keeps exactly the points the rules
# documented in imgconsolidate(1) select, and every kept point restores byte-identical.
source "${top_srcdir:-.}/tests/consolidate/cons-lib.sh"
CC=${CC:-cc}
requires "$CC"
cat >"$TESTDIR/faketime.c" <<'C'
#include <stdlib.h>
#include <time.h>
time_t time(time_t *t)
{
	const char *s = getenv("FAKE_TIME");
	time_t v = s ? (time_t)strtoll(s, NULL, 10) : 0;
	if (t)
		*t = v;
	return v;
}
C
"$CC" -shared -fPIC -o "$TESTDIR/faketime.so" "$TESTDIR/faketime.c" || skip "cannot build a preload library"

BLOCK=4K
disk=$TESTDIR/disk
mkrandom "$disk" 4 base
at() { date -u -d "$1" +%s; }
snap_at()    # NAME "UTC TIME" [PARENT]
{
	FAKE_TIME=$(at "$2") LD_PRELOAD=$TESTDIR/faketime.so \
		imgbackup -q -b 4K ${3:+-p $3} -n "$1" "$CHAIN" "$disk"
	cp "$disk" "$SRC/$1"
}
i=0
for p in "p00 2024-01-01 10:00" "p01 2024-01-15 10:00" "p02 2024-02-10 10:00" \
	 "p03 2024-02-28 09:00" "p04 2024-02-28 18:00" "p05 2024-03-01 08:00" \
	 "p06 2024-03-01 12:00" "p07 2024-03-02 12:00" "p08 2024-03-03 12:00" \
	 "p09 2024-03-04 06:00" "p10 2024-03-04 07:00"; do
	set -- $p
	[[ $1 == p00 ]] || write_at "$disk" $(( (i * 37 % 900) * 4096 + 100 )) 30000 "$1"
	snap_at "$1" "$2 $3"
	if [[ $1 == p05 ]]; then cp "$disk" "$TESTDIR/p05disk"; fi
	i=$((i + 1))
done
cp "$TESTDIR/p05disk" "$disk"
write_at "$disk" 8192 50000 br
snap_at br "2024-03-04 09:00" p05
[[ $(point_field p08 created) == 2024-03-03T12:00:00Z ]] || fail "fake time not applied"

# last 2: br, p10.  daily 3: 03-04 is br's (kept): passed over; 03-03 p08, 03-02 p07,
# 03-01 p06.  monthly 2: 2024-03 passed over; 2024-02 p04, 2024-01 p01.  p05 holds two
# kept branches.  p00 goes into p01 (a synthetic full), p02 p03 into p04, p09 into p10.
keyless_expect 0 --dry-run --keep-last 2 --keep-daily 3 --keep-monthly 2 "$CHAIN"
expect_out "keep +00000009 .* p08 +\(daily #1\)"
expect_out "keep +00000005 .* p04 +\(monthly #1\)"
expect_out "keep +00000006 .* p05 +\(branch\)"
expect_out "merge +00000001 .* p00 +-> into 'p01'"
expect_out "merge +00000010 .* p09 +-> into 'p10'"
keyless_expect 0 --keep-last 2 --keep-daily 3 --keep-monthly 2 "$CHAIN"
[[ $(point_names) == "br p01 p04 p05 p06 p07 p08 p10" ]] || fail "points: $(point_names)"
[[ $(point_field p01 kind) == synthetic-full ]] || fail "p01 is $(point_field p01 kind)"
[[ $(point_field p04 parent) == p01 && $(point_field p10 parent) == p08 ]] ||
	fail "parents: p04 <- $(point_field p04 parent), p10 <- $(point_field p10 parent)"
check_points br p01 p04 p05 p06 p07 p08 p10

# weekly 2 (ISO weeks, Monday first): 2024-03-04 (Mon) starts W10: br; W09 ends on Sunday
# 03-03: p08.  p05 is a branch point; p10 has no kept descendant: removed.
keyless_expect 0 --keep-weekly 2 "$CHAIN"
expect_out "1 removed"
[[ $(point_names) == "br p05 p08" ]] || fail "points: $(point_names)"
check_points br p05 p08

# keep-yearly 5 with a single year: the newest, and the oldest as the rule is not filled
keyless_expect 0 --dry-run --keep-yearly 5 "$CHAIN"
expect_out "keep +[0-9]+ .* br +\(yearly #1\)"
expect_out "keep +[0-9]+ .* p05 +\(.*yearly oldest"
