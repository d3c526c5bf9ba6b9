#!/bin/bash
# nbd-online.sh: merges under the NBD export's overlay (FORMAT.md 10.8).  A client writes
# to point=wed overlay=DIR (each acknowledged write recorded, reads checked as it goes)
# while imgconsolidate merges wed's ancestors (mon into tue: wed's path changes) and then
# merges tue into wed (wed rewritten into the full's file: the run waits for nbdkit's
# re-base); the client never sees an error or a wrong byte, nbdkit lets every removed
# image go, the disk equals wed plus the writes for a new client and after a restart,
# and the chain verifies.
source "$(dirname "$0")/nbd-lib.sh"
# nbdsh's python module (python3-libnbd) is the system python's
NBDPY=/usr/bin/python3
"$NBDPY" -c 'import nbd' 2>/dev/null || skip "python3-libnbd (nbdsh's module) is not installed"

make_disk_chain 64
OV=$WORK/overlay
start_nbd rw point=wed overlay="$OV"
uri=$(nbd_uri rw wed)
STOP=$WORK/stop
"$NBDPY" - "$uri" "$WORK/d2" "$STOP" "$WORK/expected" >"$WORK/writer.out" 2>&1 <<'PY' &
import os, random, sys, time
import nbd
uri, base, stop, out = sys.argv[1:5]
model = bytearray(open(base, "rb").read())
h = nbd.NBD()
h.connect_uri(uri)
r = random.Random(9)
writes = reads = 0
bad = []
open(stop + ".ready", "w").close()
while not os.path.exists(stop) or writes < 300:
    ln = r.choice((512, 4096, 5000, 65536))
    off = r.randrange(0, len(model) - ln)
    data = r.randbytes(ln)
    h.pwrite(data, off)
    model[off:off + ln] = data
    writes += 1
    if writes % 16 == 0:
        h.flush()
    ln = r.choice((4096, 65536, 1 << 20))
    off = r.randrange(0, len(model) - ln)
    if h.pread(ln, off) != bytes(model[off:off + ln]):
        bad.append((off, ln))
    reads += 1
    time.sleep(0.002)
h.flush()
for off in range(0, len(model), 1 << 20):
    if h.pread(1 << 20, off) != bytes(model[off:off + (1 << 20)]):
        bad.append(("whole", off))
h.shutdown()
open(out, "wb").write(model)
print("writes", writes, "reads", reads, "bad", len(bad), bad[:5])
sys.exit(1 if bad else 0)
PY
WRITER=$!
cleanup_fn kill_quiet "$WRITER"
for _ in $(seq 300); do
	[[ -e $STOP.ready ]] && break
	kill -0 "$WRITER" 2>/dev/null || break
	sleep 0.05
done
[[ -e $STOP.ready ]] || fail "the NBD writer did not start: $(cat "$WORK/writer.out")"
# wait_released WHEN: nbdkit holds no removed image of the chain (bounded): it re-based
# (its re-base messages are nbdkit debug messages, not in the log without -v)
wait_released()
{
	local pid held
	pid=$(cat "$WORK/rw.pid")
	for _ in $(seq 600); do
		held=$(ls -l "/proc/$pid/fd" | grep "$CHAIN/.*(deleted)" || true)
		[[ -z $held ]] && return 0
		sleep 0.05
	done
	fail "nbdkit did not re-base wed $1: it holds $held"
}

# 1. mon merged into tue (in the full's file): wed's image stays, its path changes
imgconsolidate -q --merge mon..tue "$CHAIN" || fail "merge mon..tue"
wait_released "after mon was merged into tue"
kill -0 "$WRITER" 2>/dev/null || fail "the writer stopped: $(cat "$WORK/writer.out")"
# 2. tue merged into wed: wed rewritten, the run waits for the export's re-base
imgconsolidate --merge tue..wed "$CHAIN" >"$WORK/cons.out" 2>&1 ||
	fail "merge tue..wed: $(cat "$WORK/cons.out")"
grep -q "restore point 'wed': its server re-based onto the merged image" "$WORK/cons.out" ||
	fail "the run did not wait for the re-base: $(cat "$WORK/cons.out")"
wait_released "after tue was merged into wed"

touch "$STOP"
wait "$WRITER" || fail "the NBD client saw wrong bytes or an error: $(cat "$WORK/writer.out")"
cat "$WORK/writer.out"
qemu-img compare -f raw -F raw "$uri" "$WORK/expected" >/dev/null || fail "a new client sees other bytes"
stop_nbd rw
start_nbd rw point=wed overlay="$OV"
qemu-img compare -f raw -F raw "$uri" "$WORK/expected" >/dev/null || fail "other bytes after a restart"
stop_nbd rw
! grep -qi "error\|not applied" "$WORK/rw.log" || fail "nbdkit logged: $(cat "$WORK/rw.log")"
imgverify -q --data "$CHAIN" || fail "imgverify --data"
restore_cmp "$CHAIN" wed "$WORK/d2"
restore_cmp "$CHAIN" branch "$WORK/d3"
