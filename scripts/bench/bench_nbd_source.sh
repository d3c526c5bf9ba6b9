#!/usr/bin/env bash
# NBD source throughput (issue 13), one run on the same realistic 2 GiB disk as bench_backup.sh,
# converted to qcow2 and served by qemu-nbd on a unix socket:
#   imgbackup full over NBD  vs  nbdcopy URI null: (the transport's ceiling)
#                            vs  qemu-img convert from the URI to zstd qcow2
#                            and imgbackup --level 0 (no compression: what the rest costs)
#   an 8 GiB qcow2 (the 2 GiB disk four times), full over NBD, then writes to 1% of its 64 KiB
#   blocks after a bitmap was added: imgbackup --dirty-bitmap against the full's time
# The qcow2 files are in the page cache (each is read once first).  Each figure is one run
# (RUNS=N for the median of N, the commands interleaved round by round); beside each wall
# time the client's CPU seconds (the machine may be shared: CPU time moves less with load)
# and qemu-nbd's (it serves on the same cores).  The 8 GiB full runs once, the incremental
# RUNS times (each another child of the full).
#
#   scripts/bench/bench_nbd_source.sh [BENCH_DIR]     (default /var/tmp/imgchain-bench)
# Env: RUNS (default 1), BUILD (default ./build)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-/var/tmp/imgchain-bench}
runs=${RUNS:-1}
size=2048
build=${BUILD:-$top/build}
export PATH="$build:$PATH"
export IMGCHAIN_PASSPHRASE=bench IMGCHAIN_STATE_DIR="$dir/state"
unset IMGCHAIN_PASSPHRASE_FILE
source "$top/scripts/bench/bench_lib.sh"
bench_disk "$dir" "$size"
q2="$dir/disk-${size}m.qcow2"
[ -f "$q2" ] || qemu-img convert -O qcow2 "$disk" "$q2"
q8="$dir/disk-8g.qcow2"
sock="$dir/nbd.sock"
uri="nbd+unix:///exp?socket=$sock"
pid=

serve() { # IMAGE [QEMU-NBD-OPTION]...
	local img=$1
	shift
	rm -f "$sock"
	qemu-nbd -r -f qcow2 -t -x exp -k "$sock" "$@" "$img" &
	pid=$!
	while [ ! -S "$sock" ]; do sleep 0.05; done
}
unserve() { [ -z "$pid" ] || { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }; }
trap unserve EXIT

median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
# t LABEL CMD...: the wall seconds on stdout; the client's CPU seconds (user + sys), the
# server's (qemu-nbd: it shares the cores) and the 1-minute load average appended to
# $cpu_log as "LABEL CPU WALL LOAD1 SERVER-CPU"
cpu_log="$dir/nbd-source-cpu.log"
: >"$cpu_log"
tck=$(getconf CLK_TCK)
server_cpu() { awk -v t="$tck" '{ print ($14 + $15) / t }' "/proc/$pid/stat"; }
t()
{
	local label=$1 s0
	shift
	s0=$(server_cpu)
	/usr/bin/time -o "$dir/time.out" -f '%e %U %S' "$@" >/dev/null
	set -- $(cat "$dir/time.out") "$(server_cpu)"
	echo "$label $(echo "$2 + $3" | bc -l) $1 $(cut -d' ' -f1 /proc/loadavg) $(echo "$4 - $s0" | bc -l)" >>"$cpu_log"
	echo "$1"
}
kdf() { "$@" | sed -n 's/.*passphrase KDF \([0-9.]*\) s.*/\1/p'; }
cpu_of() { awk -v l="$1" -v f="${2:-2}" '$1 == l { print $f }' "$cpu_log" | median; }

full=() full0=() copy=() conv=() kdfs=()
cat "$q2" >/dev/null
serve "$q2"
# interleaved: each round runs every command once, so that load from elsewhere spreads
for r in $(seq "$runs"); do
	rm -rf "$dir/nchain" "$dir/nchain0" "$dir/nz.qcow2"
	full+=("$(t full imgbackup -q --name full "$dir/nchain" "$uri")")
	copy+=("$(t copy nbdcopy "$uri" null:)")
	conv+=("$(t conv qemu-img convert -f raw -O qcow2 -c -o compression_type=zstd "$uri" "$dir/nz.qcow2")")
	full0+=("$(t full0 imgbackup -q --level 0 --name full "$dir/nchain0" "$uri")")
	kdfs+=("$(kdf imgbackup --name "k$r" --parent full "$dir/nchain" "$uri")")
done
unserve
rm -rf "$dir/nchain0" "$dir/nz.qcow2"
F=$(printf '%s\n' "${full[@]}" | median)
F0=$(printf '%s\n' "${full0[@]}" | median)
N=$(printf '%s\n' "${copy[@]}" | median)
Q=$(printf '%s\n' "${conv[@]}" | median)
K=$(printf '%s\n' "${kdfs[@]}" | median)

# ---- 8 GiB, 1% dirty --------------------------------------------------------------------------
if [ ! -f "$q8" ]; then
	echo "bench: creating the 8 GiB qcow2 (once)"
	cat "$disk" "$disk" "$disk" "$disk" >"$q8.raw"
	qemu-img convert -O qcow2 "$q8.raw" "$q8.tmp"
	rm -f "$q8.raw"
	mv "$q8.tmp" "$q8"
fi
cp "$q8" "$dir/d8.qcow2"
cat "$dir/d8.qcow2" >/dev/null
rm -rf "$dir/chain8"
serve "$dir/d8.qcow2"
F8=$(t full8 imgbackup -q --name full --next-bitmap b0 "$dir/chain8" "$uri")
unserve
qemu-img bitmap --add --granularity 64K "$dir/d8.qcow2" b0
# 1% of the 131072 blocks, spread evenly, each written with new bytes
python3 -c '
import random
random.seed(13)
for b in sorted(random.sample(range(131072), 1311)):
    print("write -P %d %d 64K" % (random.randrange(1, 255), b * 65536))
' | qemu-io -f qcow2 "$dir/d8.qcow2" >/dev/null
serve "$dir/d8.qcow2" -B b0
# each run another child of the full (the bitmap's point): the same blocks read
inc8=()
for r in $(seq "$runs"); do
	inc8+=("$(t inc8 imgbackup -q --name "inc$r" --dirty-bitmap b0 "$dir/chain8" "$uri")")
done
unserve
I8=$(printf '%s\n' "${inc8[@]}" | median)

mb() { echo "scale=1; $1 / 1048576 / $2" | bc -l; }
echo
echo "imgchain NBD benchmark: ${size} MiB disk as qcow2 over qemu-nbd (unix socket), nproc $(nproc), load $(cut -d' ' -f1-3 /proc/loadavg), median of $runs"
printf '%-50s %9s %9s %9s %12s\n' "run" "seconds" "CPU s" "server s" "MiB/s (disk)"
row() { printf '%-50s %9.2f %9.2f %9.2f %12s\n' "$1" "$2" "$(cpu_of "$3")" "$(cpu_of "$3" 5)" "$(mb $(($4 * 1048576)) "$2")"; }
row "imgbackup full over NBD (zstd -1 + XChaCha20)" "$F" full "$size"
row "imgbackup --level 0 full over NBD (XChaCha20)" "$F0" full0 "$size"
row "nbdcopy URI null: (transport ceiling)" "$N" copy "$size"
row "qemu-img convert URI -> zstd qcow2" "$Q" conv "$size"
row "8 GiB: imgbackup full over NBD" "$F8" full8 8192
row "8 GiB: imgbackup --dirty-bitmap, 1% dirty" "$I8" inc8 8192
echo "(CPU s: the client's user + sys, median; server s: qemu-nbd's.  Per run, with the"
echo " 1-minute load average when it ended: $cpu_log)"
echo "full / qemu-img convert time:  $(echo "scale=2; $F / $Q" | bc -l)   (target <= 0.5)"
echo "full / nbdcopy time:           $(echo "scale=2; $F / $N" | bc -l)   (target <= 1.5)"
echo "1% incremental / full (8 GiB): $(echo "scale=3; $I8 / $F8" | bc -l)  (target < 0.05)"
echo "each imgbackup includes the passphrase KDF, $K s (a fixed cost); without it:"
echo "  full / nbdcopy $(echo "scale=2; ($F - $K) / $N" | bc -l), 1% incremental / full $(echo "scale=3; ($I8 - $K) / ($F8 - $K)" | bc -l)"
