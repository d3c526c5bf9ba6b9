#!/bin/bash
# cdp-kill.sh: SIGKILL of nbdkit (the imgcdp filter) at several moments while a client writes
# with FUA (each write acknowledged only once journalled): after every kill, `imgrestore --at
# now` holds every write that was acknowledged before the kill, byte for byte, and the flush
# acknowledged before the round restores exactly; the next nbdkit starts a new session.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/cdp/cdp-lib.sh"

size=$((32 * 1048576))
cdp_setup $size
round=0
for after in 3 10 25 50; do
	round=$((round + 1))
	cdp_start
	cdp_io "write -P 0x5$round $((round * 1000)) 3000" flush; cdp_mark "$round"
	cmds=()
	for i in $(seq 0 1999); do
		cmds+=(-c "write -f -P $(((i * 7 + round) % 255 + 1)) $(((round - 1) * 8388608 + i * 4096)) 4096")
	done
	: >kill.log
	qemu-io -t writeback -f raw "$URI" "${cmds[@]}" >kill.log 2>&1 &
	io=$!
	for _ in $(seq 1200); do        # kill once AFTER writes were acknowledged (120 s at most)
		n=$(grep -c '^wrote' kill.log || true)
		((n < after)) || break
		sleep 0.05
	done
	kill -KILL "$NBDKIT_PID"
	wait "$io" || true
	NBDKIT_PID=
	acked=$(grep -c '^wrote' kill.log || true)
	((acked >= after)) || fail "round $round: only $acked writes acknowledged"
	((acked < 2000)) || fail "round $round: every write went through before the kill"
	expect_exit 0 imgrestore -P pass --at "${T[$round]}" C r
	cmp r "snap.$round" || fail "round $round: the flush acknowledged before the writes differs"
	rm r
	expect_exit 0 imgrestore -P pass --at "$(date +%s.%N)" C r
	python3 - r kill.log "$round" <<'PY' || fail "round $round: an acknowledged write is missing"
import re, sys
d = open(sys.argv[1], "rb").read()
r = int(sys.argv[3])
n = 0
for line in open(sys.argv[2]):
    m = re.match(r"wrote 4096/4096 bytes at offset (\d+)", line)
    if not m:
        continue
    off = int(m.group(1))
    i = (off - (r - 1) * 8388608) // 4096
    want = bytes([(i * 7 + r) % 255 + 1]) * 4096
    if d[off:off + 4096] != want:
        sys.exit("write %d at %d acknowledged, not in the restored disk" % (i, off))
    n += 1
print("round %d: %d acknowledged writes all restored" % (r, n))
PY
	rm r
done
[[ $(ls C/cdp | wc -l) -eq 4 ]] || fail "expected four sessions: $(ls C/cdp)"
