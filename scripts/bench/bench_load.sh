#!/usr/bin/env bash
# Mixed-load benchmark of a writable mount: tests/mount/mount-load.sh for 10 minutes on a
# bigger disk.  Five fio jobs at once on one imgmount --overlay (sequential 64 KiB and random
# 4 KiB O_DIRECT reads of a point nobody writes, random 4 KiB and sequential 64 KiB overlay
# writes with fsync and crc32c verify_backlog, random 4 KiB reads of backed-up bytes through
# the overlay), every byte read checked by fio's crc32c verify headers.  Prints per job IOPS
# and MB/s, the daemon's VmRSS over time (one sample a second, shown every tenth of the run),
# and the verdicts: fio errors, verify failures, flat memory, sources and chain unchanged.
# The figures of one run on a shared 2-core machine are noisy: compare runs of one machine.
#
#   scripts/bench/bench_load.sh [SECONDS]        (default 600)
# Env: SIZE_MIB (source disk, 512), BUILD (./build: imgbackup, imgmount),
#      OUT (/var/tmp/imgchain-bench/load: fio.out, rss.log, figures, run.log)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-600}
build=${BUILD:-$top/build}
out=${OUT:-/var/tmp/imgchain-bench/load}

die() { echo "bench_load: $*" >&2; exit 1; }
for t in fio fusermount3 mountpoint python3 sha256sum cmp; do
	command -v "$t" >/dev/null 2>&1 || die "missing tool: $t"
done
[[ -x $build/imgmount && -x $build/imgbackup ]] || die "no front/imgmount/imgbackup in $build (set BUILD)"
[[ $secs =~ ^[0-9]+$ ]] && ((secs >= 15)) || die "SECONDS must be a number >= 15"
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)

echo "bench_load: $secs s of mixed load, ${SIZE_MIB:-512} MiB disk, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
set +e
top_srcdir=$top top_builddir=$build IMGCHAIN_STATE_DIR=$out/state \
	MOUNT_LOAD_SECONDS=$secs MOUNT_LOAD_MIB=${SIZE_MIB:-512} MOUNT_LOAD_OUT=$out \
	bash "$top/tests/mount/mount-load.sh" >"$out/run.log" 2>&1
rc=$?
set -e
cat "$out/run.log"
python3 - "$out/rss.log" <<'PY'
import statistics, sys
rss = [int(x) / 1024 for x in open(sys.argv[1]).read().split()]
if rss:
    print("daemon VmRSS (MiB): min %.1f  median %.1f  max %.1f  last %.1f  over %d samples"
          % (min(rss), statistics.median(rss), max(rss), rss[-1], len(rss)))
PY
if ((rc == 0)); then
	echo "verdict: PASS (no fio error, no verify failure, flat memory, sources and chain unchanged)"
else
	echo "verdict: FAIL (exit $rc; see $out/run.log and $out/fio.out)"
fi
exit $rc
