#!/bin/bash
# mount-load.sh: a writable mount (--overlay) under sustained mixed load from five fio jobs
# at once, for MOUNT_LOAD_SECONDS (60 by default; scripts/bench/bench_load.sh runs 600):
#   seqread   sequential 64 KiB reads of inc/disk.raw             (a view nobody writes)
#   randread  random 4 KiB O_DIRECT reads of inc/disk-flat.vmdk    (the same view)
#   randwrite random 4 KiB overlay writes to full/disk.raw [0, 1/4), fsync every 64,
#             each block read back and verified (verify_backlog)
#   seqwrite  sequential 64 KiB overlay writes to full/disk.raw [1/4, 1/2), fsync every 16,
#             verified the same way
#   ovread    random 4 KiB O_DIRECT reads of full/disk-flat.vmdk [1/2, 1): backup bytes
#             read through the overlay's code path while the overlay is written
# Every byte read is checked: the source disk was written by fio with crc32c verify headers
# (offset and checksum in every 4 KiB block) and backed up as points full and inc (inc
# rewrites an eighth with another seed); every job runs with verify=crc32c verify_fatal=1.
# Asserted: no fio error and no verify failure in any job; afterwards inc and the unwritten
# half of full equal their sources (cmp); the chain files are unchanged (sha256); the daemon's
# VmRSS, sampled every second, stays flat: the maximum over the last third of the run is at
# most the maximum over the first third * 1.25 + 8 MiB.  Why that bound: the decoded-block
# cache is capped (--cache-size 16M) and fills within the first seconds of the sequential
# reader, the overlay's block map is 4 KiB per 127 MiB of disk, so after the first third the
# daemon holds no structure that may grow with time; 25 % and 8 MiB leave room for malloc
# arenas of FUSE threads started late (one per concurrent request, up to 1 MiB buffers each).
# A leak of a few hundred bytes per request, at the thousands of requests per second seen
# here, breaks it within minutes (the 10-minute benchmark), a leak per write within seconds.
# Env: MOUNT_LOAD_SECONDS (60), MOUNT_LOAD_MIB (size of the source disk, 128),
#      MOUNT_LOAD_OUT (directory that receives fio.out, rss.log and figures: kept after exit).
. "$(dirname "$0")/mount-lib.sh"
requires fio sha256sum cmp

secs=${MOUNT_LOAD_SECONDS:-60}
mib=${MOUNT_LOAD_MIB:-128}
((secs >= 15 && mib >= 32 && mib % 8 == 0)) || fail "MOUNT_LOAD_SECONDS >= 15 and MOUNT_LOAD_MIB a multiple of 8 >= 32"
out=${MOUNT_LOAD_OUT:-$WORK}
mkdir -p "$out"
size=$((mib << 20))
q=$((size / 4))

# the sources: fio-written blocks with verify headers; inc rewrites [1/4, 3/8) with another seed
fio --output="$WORK/prep.out" --name=prep --filename="$WORK/full.raw" --rw=write --bs=4k \
	--size="$size" --verify=crc32c --do_verify=0 --ioengine=psync --randseed=1 --verify_state_save=0 ||
	{ cat "$WORK/prep.out"; fail "fio could not write the source disk"; }
cp "$WORK/full.raw" "$WORK/inc.raw"
fio --output="$WORK/prep.out" --name=prep2 --filename="$WORK/inc.raw" --rw=randwrite --bs=4k \
	--offset="$q" --size=$((size / 8)) --verify=crc32c --do_verify=0 --ioengine=psync \
	--randseed=2 --norandommap=0 --verify_state_save=0 ||
	{ cat "$WORK/prep.out"; fail "fio could not rewrite the incremental's eighth"; }
cmp -s "$WORK/full.raw" "$WORK/inc.raw" && fail "the incremental's source did not change"
imgbackup -q -n full "$CHAIN" "$WORK/full.raw"
imgbackup -q -n inc "$CHAIN" "$WORK/inc.raw"
(cd "$CHAIN" && sha256sum -- * >"$WORK/chain.sums")

mount_chain "$CHAIN" --overlay "$WORK/overlay" --cache-size 16M
# VmRSS of the daemon every second, in KiB
(
	while kill -0 "$MOUNT_PID" 2>/dev/null; do
		awk '/^VmRSS:/ { print $2 }' "/proc/$MOUNT_PID/status" 2>/dev/null || break
		sleep 1
	done
) >"$out/rss.log" &
RSS_PID=$!

common=(--ioengine=psync --time_based --runtime="$secs" --verify=crc32c --verify_fatal=1
	--fallocate=none --allow_file_create=0 --group_reporting=0 --verify_state_save=0)
set +e
fio --output="$out/fio.out" "${common[@]}" \
	--name=seqread --filename="$MNT/inc/disk.raw" --rw=read --bs=64k --verify_interval=4k \
	--size="$size" \
	--name=randread --filename="$MNT/inc/disk-flat.vmdk" --rw=randread --bs=4k --direct=1 \
	--size="$size" \
	--name=randwrite --filename="$MNT/full/disk.raw" --rw=randwrite --bs=4k --offset=0 \
	--size="$q" --fsync=64 --verify_backlog=64 --randseed=3 \
	--name=seqwrite --filename="$MNT/full/disk.raw" --rw=write --bs=64k --offset="$q" \
	--size="$q" --fsync=16 --verify_backlog=16 --randseed=4 \
	--name=ovread --filename="$MNT/full/disk-flat.vmdk" --rw=randread --bs=4k --direct=1 \
	--offset=$((2 * q)) --size=$((2 * q))
rc=$?
set -e
kill "$RSS_PID" 2>/dev/null || true
wait "$RSS_PID" 2>/dev/null || true

# figures: per job IOPS and MB/s (reads and writes), then the RSS over time
python3 - "$out/fio.out" "$out/rss.log" >"$out/figures" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for m in re.finditer(r"^(\w+): \(groupid=\d+, jobs=\d+\): err=\s*(\d+)(.*?)(?=^\w+: \(groupid|^Run status)", text, re.S | re.M):
    name, err, body = m.group(1), m.group(2), m.group(3)
    for d in ("read", "write"):
        r = re.search(r"^\s+%s: IOPS=([\d.]+k?), BW=[^(]*\(([\d.]+[kMG]?B/s)\)" % d, body, re.M)
        if r:
            print("%-10s %-5s IOPS %8s  %10s  err=%s" % (name, d, r.group(1), r.group(2), err))
rss = [int(x) for x in open(sys.argv[2]).read().split()]
if rss:
    step = max(1, len(rss) // 10)
    print("daemon VmRSS (MiB), every %dth sample (about 1 a second): %s" % (step, " ".join("%.1f" % (rss[i] / 1024) for i in range(0, len(rss), step))))
PY
cat "$out/figures"
((rc == 0)) || { cat "$out/fio.out"; fail "fio exited $rc"; }
! grep -q "verify failed" "$out/fio.out" || { grep -A2 "verify failed" "$out/fio.out" | head; fail "fio saw wrong bytes"; }
jobs_ok=$(grep -c ': (groupid=[0-9]*, jobs=1): err= 0' "$out/fio.out" || true)
((jobs_ok == 5)) || { cat "$out/fio.out"; fail "$jobs_ok of 5 fio jobs ended without error"; }
for j in seqread randread randwrite seqwrite ovread; do
	awk -v j="$j" '$1 == j":" { f = 1 } f && /(read|write): IOPS=/ { print; exit }' "$out/fio.out" |
		grep -qv 'IOPS=0,' || fail "fio job $j did no I/O"
done

# RSS: flat
python3 - "$out/rss.log" <<'PY' || fail "the daemon's memory grew under load"
import sys
rss = [int(x) for x in open(sys.argv[1]).read().split()]
if len(rss) < 9:
    sys.exit("only %d RSS samples" % len(rss))
t = len(rss) // 3
first, last = max(rss[:t]), max(rss[-t:])
bound = first * 1.25 + 8192
print("VmRSS max first third %d KiB, last third %d KiB, bound %d KiB" % (first, last, bound))
sys.exit(0 if last <= bound else 1)
PY

# the untouched bytes are still the backups'
cmp "$MNT/inc/disk.raw" "$WORK/inc.raw" || fail "inc differs from its source after the load"
cmp <(tail -c +$((2 * q + 1)) "$MNT/full/disk.raw") <(tail -c +$((2 * q + 1)) "$WORK/full.raw") ||
	fail "the unwritten half of full differs from its source"
unmount_chain
(cd "$CHAIN" && sha256sum --quiet -c "$WORK/chain.sums") || fail "chain files changed"
echo "ok"
