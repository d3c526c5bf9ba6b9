#!/usr/bin/env bash
# NBD benchmark: the imgchain nbdkit plugin against qemu-nbd serving the same disk as zstd
# qcow2 and as LUKS qcow2 (and as a raw file: the transport's ceiling), side by side in one
# run on two disks (scripts/bench/bench_lib.sh, shared with bench_mount.sh): "sparse", the
# realistic disk of tests/lib/mkdisk.sh (about 1.1 GiB of data in 2 GiB), and "dense", an
# ext4 85% full of real binaries and libraries (about 1.7 GiB):
#   (a) sequential read of the whole disk: `nbdcopy URI null:` (nbdcopy's defaults: 4
#       connections where the server allows multi-conn, 64 requests in flight each), cold:
#       page cache dropped and a fresh server for every run;
#   (b) random 4 KiB reads, IOPS: fio's nbd engine (libnbd), 2 jobs x iodepth 16, on a fresh
#       server; cold (page cache dropped) and warm (the files read into the page cache first).
# Figures: medians of RUNS (seq) and FIO_RUNS (IOPS), runs interleaved across targets and
# disks (A B A B), the server's CPU seconds beside each sequential figure (the machine's
# load skews wall time, CPU time much less), then the ratios against the better qcow2 peer.
# Compare ratios within one run, never absolute figures across runs.  Inputs are built once
# in BENCH_DIR (the disks) and BENCH_DIR/in-sparse, BENCH_DIR/in-dense (bench_inputs).
#
#   scripts/bench/bench_nbd.sh [BENCH_DIR]     (default /var/tmp/imgchain-bench)
# Env: RUNS (3), FIO_RUNS (3), FIO_RUNTIME (10), SIZE_MIB (2048), BUILD (./build),
#      DISKS ("sparse dense"), MAX_SECONDS (3600)
# Run as root: dropping the page cache needs it (otherwise "cold" figures are warm).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-/var/tmp/imgchain-bench}
runs=${RUNS:-3}
fio_runs=${FIO_RUNS:-3}
fio_rt=${FIO_RUNTIME:-10}
size=${SIZE_MIB:-2048}
build=${BUILD:-$top/build}
max_seconds=${MAX_SECONDS:-3600}
disks=${DISKS:-sparse dense}
plugin=$build/nbdkit-imgchain-plugin.so
export PATH="$build:$PATH"
export IMGCHAIN_PASSPHRASE=bench
unset IMGCHAIN_PASSPHRASE_FILE IMGCHAIN_KDF
export LC_ALL=C

die() { echo "bench_nbd: $*" >&2; exit 1; }
log() { echo "bench_nbd: $*" >&2; }
for t in imgbackup nbdkit nbdcopy qemu-nbd qemu-img fio python3 timeout; do
	command -v "$t" >/dev/null 2>&1 || die "missing tool: $t"
done
[[ -f $plugin ]] || die "$plugin is not built"
fio --enghelp 2>/dev/null | grep -qw nbd || die "this fio has no nbd engine"
cold=1
if [[ $(id -u) != 0 ]]; then
	log "not root: the page cache cannot be dropped, 'cold' figures are warm"
	cold=0
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
export IMGCHAIN_STATE_DIR=$dir/state
run=$(mktemp -d "$dir/nbd-run.XXXXXX")
SOCK=$run/s.sock
SRV_PID='' WATCHDOG=''

stop_srv() {
	if [[ -n $SRV_PID ]]; then
		kill "$SRV_PID" 2>/dev/null || true
		wait "$SRV_PID" 2>/dev/null || true
		SRV_PID=
	fi
	rm -f "$SOCK"
}
cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	stop_srv
	if [[ -n $WATCHDOG ]]; then
		kill "$WATCHDOG" 2>/dev/null
		wait "$WATCHDOG" 2>/dev/null
	fi
	rm -rf "$run"
	exit $rc
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log "aborted (more than MAX_SECONDS=$max_seconds s, or SIGTERM)"; exit 143' TERM
(
	sleep "$max_seconds" &
	sp=$!
	trap 'kill $sp 2>/dev/null; exit 0' TERM
	wait $sp && kill -TERM $$ 2>/dev/null
) </dev/null >/dev/null 2>&1 &
WATCHDOG=$!

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
drop() {
	sync
	((cold)) && echo 3 >/proc/sys/vm/drop_caches
	return 0
}

# ---- inputs, built once ------------------------------------------------------------------------
source "$top/scripts/bench/bench_lib.sh"
mkdir -p "$IMGCHAIN_STATE_DIR"
declare -A DISK USED
for k in $disks; do
	case $k in
	sparse) bench_disk "$dir" "$size"; DISK[$k]=$disk ;;
	dense) bench_disk_dense "$dir" "$size"; DISK[$k]=$dense ;;
	*) die "DISKS: unknown disk '$k' (sparse, dense)" ;;
	esac
	bench_inputs "${DISK[$k]}" "$dir/in-$k" >&2 || die "cannot build the inputs of the $k disk"
	USED[$k]=$(du -k "${DISK[$k]}" | cut -f1)
	log "$k disk: $size MiB, $((USED[$k] / 1024)) MiB allocated; chain $(du -sm "$dir/in-$k/chain" | cut -f1) MiB, zstd qcow2 $(du -m "$dir/in-$k/z.qcow2" | cut -f1) MiB, LUKS qcow2 $(du -m "$dir/in-$k/l.qcow2" | cut -f1) MiB"
done

# ---- targets --------------------------------------------------------------------------------------
TARGETS="im qz ql raw"
declare -A NAME=(
	[im]="imgchain nbdkit plugin"
	[qz]="qemu-nbd, zstd qcow2"
	[ql]="qemu-nbd, LUKS qcow2"
	[raw]="qemu-nbd, raw file (ceiling)"
)
# files TARGET DISK: the files behind TARGET, into FILES
files() {
	case $1 in
	im) FILES=("$dir/in-$2/chain"/*) ;;
	qz) FILES=("$dir/in-$2/z.qcow2") ;;
	ql) FILES=("$dir/in-$2/l.qcow2") ;;
	raw) FILES=("${DISK[$2]}") ;;
	esac
}

# start TARGET DISK: a fresh read-only server on $SOCK; URI in $URI
start() {
	local i in=$dir/in-$2
	stop_srv
	case $1 in
	im)
		nbdkit -f -r -U "$SOCK" "$plugin" "$in/chain" >"$run/srv.log" 2>&1 &
		URI="nbd+unix:///?socket=$SOCK" ;;
	qz)
		qemu-nbd -r -f qcow2 -e 8 -t -k "$SOCK" -x d "$in/z.qcow2" >"$run/srv.log" 2>&1 &
		URI="nbd+unix:///d?socket=$SOCK" ;;
	ql)
		qemu-nbd -r -e 8 -t -k "$SOCK" -x d --object secret,id=s,data=pw \
			--image-opts "driver=qcow2,file.filename=$in/l.qcow2,encrypt.key-secret=s" \
			>"$run/srv.log" 2>&1 &
		URI="nbd+unix:///d?socket=$SOCK" ;;
	raw)
		qemu-nbd -r -f raw -e 8 -t -k "$SOCK" -x d "${DISK[$2]}" >"$run/srv.log" 2>&1 &
		URI="nbd+unix:///d?socket=$SOCK" ;;
	esac
	SRV_PID=$!
	for ((i = 0; i < 600; i++)); do
		[[ -S $SOCK ]] && nbdinfo --size "$URI" >/dev/null 2>&1 && return 0
		kill -0 "$SRV_PID" 2>/dev/null || { cat "$run/srv.log" >&2; die "$1: server died"; }
		sleep 0.05
	done
	die "$1: server not ready after 30 s"
}

# CPU seconds (user + system) the server used so far
srv_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / hz }' "/proc/$SRV_PID/stat"; }

# seq_read TARGET DISK: RES = MiB/s of nbdcopy to null:, cold; CPU = the server's CPU seconds
seq_read() {
	local t0 t1 c0
	drop
	start "$1" "$2"
	c0=$(srv_cpu)
	t0=$(now)
	timeout 600 nbdcopy "$URI" null: || die "$1: nbdcopy failed"
	t1=$(now)
	CPU=$(echo "$(srv_cpu) - $c0" | bc -l | xargs printf '%.1f')
	RES=$(echo "$size / ($t1 - $t0)" | bc -l | xargs printf '%.0f')
	stop_srv
}

# rand_read TARGET DISK cold|warm: RES = fio random 4 KiB read IOPS (nbd engine, 2 x iodepth 16)
rand_read() {
	if [[ $3 == cold ]]; then
		drop
	else
		files "$1" "$2"
		cat "${FILES[@]}" >/dev/null
	fi
	start "$1" "$2"
	timeout $((fio_rt + 120)) fio --name=r --ioengine=nbd --uri="$URI" --rw=randread --bs=4k \
		--iodepth=16 --numjobs=2 --runtime="$fio_rt" --time_based --group_reporting \
		--size="${size}M" --output-format=json --output="$run/fio.json" >/dev/null 2>"$run/fio.err" ||
		{ cat "$run/fio.err" >&2; die "$1: fio failed"; }
	RES=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.0f" % j["jobs"][0]["read"]["iops"])' "$run/fio.json")
	stop_srv
}

load0=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A seqs cpus rnds rndws SEQ CPUS RND RNDW
for ((r = 1; r <= runs; r++)); do
	for k in $disks; do
		for t in $TARGETS; do
			seq_read "$t" "$k"
			seqs[$k.$t]+="$RES "
			cpus[$k.$t]+="$CPU "
			log "seq run $r: $k: ${NAME[$t]}: $RES MiB/s, server CPU $CPU s"
		done
	done
done
for ((r = 1; r <= fio_runs; r++)); do
	for k in $disks; do
		for t in $TARGETS; do
			rand_read "$t" "$k" cold
			rnds[$k.$t]+="$RES "
			log "random 4k cold run $r: $k: ${NAME[$t]}: $RES IOPS"
			rand_read "$t" "$k" warm
			rndws[$k.$t]+="$RES "
			log "random 4k warm run $r: $k: ${NAME[$t]}: $RES IOPS"
		done
	done
done
for k in $disks; do
	for t in $TARGETS; do
		SEQ[$k.$t]=$(printf '%s\n' ${seqs[$k.$t]} | median)
		CPUS[$k.$t]=$(printf '%s\n' ${cpus[$k.$t]} | median)
		RND[$k.$t]=$(printf '%s\n' ${rnds[$k.$t]} | median)
		RNDW[$k.$t]=$(printf '%s\n' ${rndws[$k.$t]} | median)
	done
done

best() { (($1 > $2)) && echo "$1" || echo "$2"; }
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
echo
echo "NBD read benchmark: ${size} MiB disks, $(nproc) CPUs, cold = page cache dropped, fresh server per run"
echo "load average at start $load0, at end $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews wall time)"
echo "seq: nbdcopy to null:, median of $runs (server CPU s: user + system, median); rand: fio nbd 2 x iodepth 16, median of $fio_runs"
for k in $disks; do
	echo
	echo "$k disk: $((USED[$k] / 1024)) MiB allocated"
	printf '%-34s %10s %8s %16s %16s\n' target "seq MiB/s" "CPU s" "rand4k cold IOPS" "rand4k warm IOPS"
	for t in $TARGETS; do
		printf '%-34s %10s %8s %16s %16s\n' "${NAME[$t]}" "${SEQ[$k.$t]}" "${CPUS[$k.$t]}" \
			"${RND[$k.$t]}" "${RNDW[$k.$t]}"
	done
	bs=$(best "${SEQ[$k.qz]}" "${SEQ[$k.ql]}")
	br=$(best "${RND[$k.qz]}" "${RND[$k.ql]}")
	bw=$(best "${RNDW[$k.qz]}" "${RNDW[$k.ql]}")
	echo "$k: imgchain / better qcow2 peer: seq $(ratio "${SEQ[$k.im]}" "$bs")x, rand4k cold $(ratio "${RND[$k.im]}" "$br")x, rand4k warm $(ratio "${RNDW[$k.im]}" "$bw")x (target 2x each)"
	echo "$k: server CPU s per run: imgchain ${CPUS[$k.im]}, zstd qcow2 ${CPUS[$k.qz]}, LUKS qcow2 ${CPUS[$k.ql]}"
done
