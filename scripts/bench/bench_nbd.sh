#!/usr/bin/env bash
# NBD benchmark: the imgchain nbdkit plugin against qemu-nbd serving the same disk as zstd
# qcow2 and as LUKS qcow2 (and as a raw file: the transport's ceiling), side by side in one
# run on the same realistic disk (tests/lib/mkdisk.sh, shared with bench_mount.sh):
#   (a) sequential read of the whole disk: `nbdcopy URI null:` (nbdcopy's defaults: 4
#       connections where the server allows multi-conn, 64 requests in flight each), cold:
#       page cache dropped and a fresh server for every run;
#   (b) random 4 KiB reads, IOPS: fio's nbd engine (libnbd), 2 jobs x iodepth 16, on a fresh
#       server; cold (page cache dropped) and warm (the files read into the page cache first).
# Figures: medians of RUNS (seq) and FIO_RUNS (IOPS), runs interleaved across targets, then
# the ratios against the better qcow2 peer.  Compare ratios within one run, never absolute
# figures across runs.  Inputs are built once in BENCH_DIR (the disk) and BENCH_DIR/nbd.
#
#   scripts/bench/bench_nbd.sh [BENCH_DIR]     (default /var/tmp/imgchain-bench)
# Env: RUNS (3), FIO_RUNS (3), FIO_RUNTIME (10), SIZE_MIB (2048), BUILD (./build),
#      MAX_SECONDS (1800)
# Run as root: dropping the page cache needs it (otherwise "cold" figures are warm).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-/var/tmp/imgchain-bench}
runs=${RUNS:-3}
fio_runs=${FIO_RUNS:-3}
fio_rt=${FIO_RUNTIME:-10}
size=${SIZE_MIB:-2048}
build=${BUILD:-$top/build}
max_seconds=${MAX_SECONDS:-1800}
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
cache=$dir/nbd
export IMGCHAIN_STATE_DIR=$cache/state
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
bench_disk "$dir" "$size"
stamp="$(stat -c '%s %Y' "$disk") v1"
if [[ ! -f $cache/stamp || $(cat "$cache/stamp") != "$stamp" ]]; then
	rm -rf "$cache"
	mkdir -p "$cache"
	echo "$stamp" >"$cache/stamp"
fi
mkdir -p "$IMGCHAIN_STATE_DIR"
if [[ ! -d $cache/chain ]]; then
	log "imgbackup full -> $cache/chain"
	rm -rf "$cache/chain.tmp"
	imgbackup -q -n full "$cache/chain.tmp" "$disk"
	mv "$cache/chain.tmp" "$cache/chain"
fi
if [[ ! -f $cache/z.qcow2 ]]; then
	log "qemu-img convert: zstd qcow2"
	qemu-img convert -O qcow2 -c -o compression_type=zstd "$disk" "$cache/z.qcow2.tmp"
	mv "$cache/z.qcow2.tmp" "$cache/z.qcow2"
fi
if [[ ! -f $cache/l.qcow2 ]]; then
	log "qemu-img convert: LUKS qcow2"
	# LUKS times its PBKDF on creation, which fails now and then on a loaded machine
	# ("Unable to get accurate CPU usage"): try again
	for ((i = 0; i < 5; i++)); do
		qemu-img convert -O qcow2 --object secret,id=s,data=pw \
			-o encrypt.format=luks,encrypt.key-secret=s "$disk" "$cache/l.qcow2.tmp" && break
		sleep 1
	done
	((i < 5)) || die "cannot create the LUKS qcow2"
	mv "$cache/l.qcow2.tmp" "$cache/l.qcow2"
fi
used=$(du -k "$disk" | cut -f1)
log "disk: $size MiB, $((used / 1024)) MiB allocated; chain $(du -sm "$cache/chain" | cut -f1) MiB, zstd qcow2 $(du -m "$cache/z.qcow2" | cut -f1) MiB, LUKS qcow2 $(du -m "$cache/l.qcow2" | cut -f1) MiB"

# ---- targets --------------------------------------------------------------------------------------
TARGETS="im qz ql raw"
declare -A NAME=(
	[im]="imgchain nbdkit plugin"
	[qz]="qemu-nbd, zstd qcow2"
	[ql]="qemu-nbd, LUKS qcow2"
	[raw]="qemu-nbd, raw file (ceiling)"
)
declare -A FILES=(
	[im]="$cache/chain"
	[qz]="$cache/z.qcow2"
	[ql]="$cache/l.qcow2"
	[raw]="$disk"
)

# start TARGET: a fresh read-only server on $SOCK; URI in $URI
start() {
	local i
	stop_srv
	case $1 in
	im)
		nbdkit -f -r -U "$SOCK" "$plugin" "$cache/chain" >"$run/srv.log" 2>&1 &
		URI="nbd+unix:///?socket=$SOCK" ;;
	qz)
		qemu-nbd -r -f qcow2 -e 8 -t -k "$SOCK" -x d "$cache/z.qcow2" >"$run/srv.log" 2>&1 &
		URI="nbd+unix:///d?socket=$SOCK" ;;
	ql)
		qemu-nbd -r -e 8 -t -k "$SOCK" -x d --object secret,id=s,data=pw \
			--image-opts "driver=qcow2,file.filename=$cache/l.qcow2,encrypt.key-secret=s" \
			>"$run/srv.log" 2>&1 &
		URI="nbd+unix:///d?socket=$SOCK" ;;
	raw)
		qemu-nbd -r -f raw -e 8 -t -k "$SOCK" -x d "$disk" >"$run/srv.log" 2>&1 &
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

# seq_read TARGET: RES = MiB/s of nbdcopy to null:, cold
seq_read() {
	local t0 t1
	drop
	start "$1"
	t0=$(now)
	timeout 600 nbdcopy "$URI" null: || die "$1: nbdcopy failed"
	t1=$(now)
	RES=$(echo "$size / ($t1 - $t0)" | bc -l | xargs printf '%.0f')
	stop_srv
}

# rand_read TARGET cold|warm: RES = fio random 4 KiB read IOPS (nbd engine, 2 x iodepth 16)
rand_read() {
	if [[ $2 == cold ]]; then
		drop
	else
		cat ${FILES[$1]} >/dev/null 2>&1 || cat "${FILES[$1]}"/* >/dev/null
	fi
	start "$1"
	timeout $((fio_rt + 120)) fio --name=r --ioengine=nbd --uri="$URI" --rw=randread --bs=4k \
		--iodepth=16 --numjobs=2 --runtime="$fio_rt" --time_based --group_reporting \
		--size="${size}M" --output-format=json --output="$run/fio.json" >/dev/null 2>"$run/fio.err" ||
		{ cat "$run/fio.err" >&2; die "$1: fio failed"; }
	RES=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.0f" % j["jobs"][0]["read"]["iops"])' "$run/fio.json")
	stop_srv
}

declare -A seqs rnds rndws SEQ RND RNDW
for ((r = 1; r <= runs; r++)); do
	for t in $TARGETS; do
		seq_read "$t"
		seqs[$t]+="$RES "
		log "seq run $r: ${NAME[$t]}: $RES MiB/s"
	done
done
for ((r = 1; r <= fio_runs; r++)); do
	for t in $TARGETS; do
		rand_read "$t" cold
		rnds[$t]+="$RES "
		log "random 4k cold run $r: ${NAME[$t]}: $RES IOPS"
		rand_read "$t" warm
		rndws[$t]+="$RES "
		log "random 4k warm run $r: ${NAME[$t]}: $RES IOPS"
	done
done
for t in $TARGETS; do
	SEQ[$t]=$(printf '%s\n' ${seqs[$t]} | median)
	RND[$t]=$(printf '%s\n' ${rnds[$t]} | median)
	RNDW[$t]=$(printf '%s\n' ${rndws[$t]} | median)
done

best() { (($1 > $2)) && echo "$1" || echo "$2"; }
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
echo
echo "NBD read benchmark: ${size} MiB disk ($((used / 1024)) MiB allocated), $(nproc) CPUs, cold = page cache dropped"
printf '%-34s %12s %16s %16s\n' target "seq MiB/s" "rand4k cold IOPS" "rand4k warm IOPS"
for t in $TARGETS; do
	printf '%-34s %12s %16s %16s\n' "${NAME[$t]}" "${SEQ[$t]}" "${RND[$t]}" "${RNDW[$t]}"
done
bs=$(best "${SEQ[qz]}" "${SEQ[ql]}")
br=$(best "${RND[qz]}" "${RND[ql]}")
bw=$(best "${RNDW[qz]}" "${RNDW[ql]}")
echo "imgchain / better qcow2 peer: seq $(ratio "${SEQ[im]}" "$bs")x, rand4k cold $(ratio "${RND[im]}" "$br")x, rand4k warm $(ratio "${RNDW[im]}" "$bw")x"
