#!/usr/bin/env bash
# Read benchmark of imgmount, side by side in one run against qemu-storage-daemon's FUSE
# export of the same disk as zstd qcow2 and as LUKS qcow2 (doc: ../shared/reference/PEERS.md),
# on two 2 GiB disks (scripts/bench/bench_lib.sh, shared with bench_nbd.sh): the realistic
# disk of tests/lib/mkdisk.sh (about 1.1 GiB of data) and a dense one, an ext4 85% full of
# real binaries and libraries (about 1.7 GiB; (a) and (b) only):
#   (a) sequential read of the whole disk (dd bs=1M), cold: page cache dropped and a fresh
#       mount / daemon for every run (imgmount's decoded-block cache starts empty), with
#       the CPU seconds (user + system) the server spent beside the wall time;
#   (b) random 4 KiB reads, IOPS: fio randread --direct=1 --ioengine=psync --numjobs=2 on a fresh
#       mount / daemon, the same options for every target; twice: cold (page cache dropped: the
#       figure includes the host disk's latency) and warm (the chain / qcow2 / raw files read
#       into the page cache first: the figure is the read path's own cost);
#   (c) a chain of depth 30 against depth 1: the disk plus 30 incrementals of small random
#       changes (16 blocks of 64 KiB each), newest point, against a single full backup of the
#       same final content (and the same for a zstd qcow2 backing chain built with qemu-io);
#   (d) boot time of the test boot disk (tests/lib/mkbootdisk.sh) from the mount's disk.vmdk
#       against booting the source raw file directly (qemu TCG, snapshot=on, cold caches).
# Figures: seq = median of RUNS, warm IOPS = median of FIO_RUNS, cold IOPS = median of
# FIO_COLD_RUNS (imgmount and the peers only), boot = median of BOOT_RUNS, runs interleaved
# across targets (A B A B); then the ratios the targets of issues 3 and 12 use. Disks, chains
# and qcow2 files are built once and cached in BENCH_DIR/in-sparse, BENCH_DIR/in-dense and
# BENCH_DIR/mount (the depth chains; rebuilt when the disk changes); compare ratios
# from one run, never absolute figures across runs. About 15 minutes once the cache is built.
#
#   scripts/bench/bench_mount.sh [BENCH_DIR]     (default /var/tmp/imgchain-bench)
# Env: RUNS (3), FIO_RUNS (3, warm), FIO_COLD_RUNS (3), FIO_RUNTIME (10), BOOT_RUNS (3),
#      DEPTH (30), SIZE_MIB (2048), BUILD (./build: imgbackup, imgmount),
#      MAX_SECONDS (2400: the whole run is aborted after that)
# Run as root: dropping the page cache needs it (otherwise figures are warm and say so).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-/var/tmp/imgchain-bench}
runs=${RUNS:-3}
fio_runs=${FIO_RUNS:-3}
fio_cold_runs=${FIO_COLD_RUNS:-3}
fio_rt=${FIO_RUNTIME:-10}
boot_runs=${BOOT_RUNS:-3}
depth=${DEPTH:-30}
size=${SIZE_MIB:-2048}
build=${BUILD:-$top/build}
max_seconds=${MAX_SECONDS:-2400}
export PATH="$build:$PATH"
export IMGCHAIN_PASSPHRASE=bench
unset IMGCHAIN_PASSPHRASE_FILE IMGCHAIN_KDF
export LC_ALL=C
source "$top/tests/lib/mkbootdisk.sh"

die() { echo "bench_mount: $*" >&2; exit 1; }
for t in imgbackup imgmount qemu-img qemu-io qemu-storage-daemon fio fusermount3 mountpoint bc python3 timeout; do
	command -v "$t" >/dev/null 2>&1 || die "missing tool: $t"
done
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"
cold=1
if [[ $(id -u) != 0 ]]; then
	echo "bench_mount: not root: the page cache cannot be dropped, 'cold' figures are warm" >&2
	cold=0
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cache=$dir/mount
export IMGCHAIN_STATE_DIR=$cache/state
run=$(mktemp -d "$dir/mount-run.XXXXXX")
MNT=$run/mnt
QFILE=$run/q.raw
mkdir -p "$MNT"
IM_PID='' QSD_PID='' WATCHDOG=''

# ---- cleanup: mounts, daemons, the watchdog --------------------------------------------------
stop_im() {
	if grep -qF " $MNT " /proc/self/mounts 2>/dev/null; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null || true
	fi
	if [[ -n $IM_PID ]]; then
		local i
		for ((i = 0; i < 100; i++)); do kill -0 "$IM_PID" 2>/dev/null || break; sleep 0.05; done
		kill "$IM_PID" 2>/dev/null || true
		wait "$IM_PID" 2>/dev/null || true
		IM_PID=
	fi
}
stop_qsd() {
	if [[ -n $QSD_PID ]]; then
		kill "$QSD_PID" 2>/dev/null || true
		wait "$QSD_PID" 2>/dev/null || true
		QSD_PID=
	fi
	if grep -qF " $QFILE " /proc/self/mounts 2>/dev/null; then
		fusermount3 -u "$QFILE" 2>/dev/null || fusermount3 -uz "$QFILE" 2>/dev/null || true
	fi
}
cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	stop_im
	stop_qsd
	if [[ -n $WATCHDOG ]]; then
		kill "$WATCHDOG" 2>/dev/null
		wait "$WATCHDOG" 2>/dev/null
	fi
	if grep -qF "$run/" /proc/self/mounts; then
		echo "bench_mount: $run still has a mount: left in place" >&2
	else
		rm -rf "$run"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'echo "bench_mount: interrupted" >&2; exit 130' INT
trap 'echo "bench_mount: aborted (more than MAX_SECONDS=$max_seconds s, or SIGTERM)" >&2; exit 143' TERM
# Each step below is bounded by its own timeout; the watchdog bounds the whole run.
(
	sleep "$max_seconds" &
	sp=$!
	trap 'kill $sp 2>/dev/null; exit 0' TERM
	wait $sp && kill -TERM $$ 2>/dev/null
) </dev/null >/dev/null 2>&1 &
WATCHDOG=$!

log() { echo "bench_mount: $*" >&2; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
drop() {
	sync
	((cold)) && echo 3 >/proc/sys/vm/drop_caches
	return 0
}

# ---- inputs, built once and cached ------------------------------------------------------------
source "$top/scripts/bench/bench_lib.sh"
mkdir -p "$dir/state"
bench_disk "$dir" "$size"
bench_disk_dense "$dir" "$size"
IMGCHAIN_STATE_DIR=$dir/state bench_inputs "$disk" "$dir/in-sparse" >&2 ||
	die "cannot build the inputs of the sparse disk"
IMGCHAIN_STATE_DIR=$dir/state bench_inputs "$dense" "$dir/in-dense" >&2 ||
	die "cannot build the inputs of the dense disk"
stamp="$(stat -c '%s %Y' "$disk") depth $depth v1"
if [[ ! -f $cache/stamp || $(cat "$cache/stamp") != "$stamp" ]]; then
	log "new cache in $cache"
	rm -rf "$cache"
	mkdir -p "$cache"
	echo "$stamp" >"$cache/stamp"
fi
mkdir -p "$IMGCHAIN_STATE_DIR"

# full CHAIN_DIR NAME DISK: a one-point chain, built once
full() {
	[[ -d $1 ]] && return 0
	log "imgbackup full of ${3##*/} -> ${1##*/}"
	rm -rf "$1.tmp"
	imgbackup -q -n "$2" "$1.tmp" "$3"
	mv "$1.tmp" "$1"
}
# Depth: DEPTH steps of 16 random 64 KiB blocks each (seeded), as files for dd / qemu-io and as
# "OFFSET LENGTH" lists for imgbackup --changed-blocks.
if [[ ! -f $cache/disk-d$depth.raw ]]; then
	log "depth: $depth steps of changes"
	rm -rf "$cache/changes"
	mkdir -p "$cache/changes"
	cp --sparse=always "$disk" "$cache/disk-d$depth.raw.tmp"
	python3 - "$cache/changes" "$cache/disk-d$depth.raw.tmp" "$depth" <<'PY'
import os, random, sys
out, path, depth = sys.argv[1], sys.argv[2], int(sys.argv[3])
size = os.path.getsize(path)
B = 65536
with open(path, "r+b") as disk:
    for step in range(1, depth + 1):
        r = random.Random("imgchain-depth-%d" % step)
        offs = sorted(set(r.randrange(0, size // B) * B for _ in range(16)))
        with open(os.path.join(out, "step%02d.list" % step), "w") as lst:
            for k, off in enumerate(offs):
                data = r.randbytes(B)
                with open(os.path.join(out, "step%02d-%02d.bin" % (step, k)), "wb") as f:
                    f.write(data)
                disk.seek(off)
                disk.write(data)
                lst.write("%d %d\n" % (off, B))
PY
	mv "$cache/disk-d$depth.raw.tmp" "$cache/disk-d$depth.raw"
fi
disk_d=$cache/disk-d$depth.raw
if [[ ! -d $cache/chain-d$depth ]]; then
	log "imgbackup: chain of depth $depth"
	c=$cache/chain-d$depth.tmp
	rm -rf "$c"
	cp --sparse=always "$disk" "$cache/work.raw"
	imgbackup -q -n p00 "$c" "$cache/work.raw"
	for ((s = 1; s <= depth; s++)); do
		k=0
		while read -r off len; do
			dd if="$cache/changes/$(printf 'step%02d-%02d.bin' "$s" "$k")" of="$cache/work.raw" bs=65536 \
				oflag=seek_bytes seek="$off" conv=notrunc status=none
			k=$((k + 1))
		done <"$cache/changes/$(printf step%02d.list "$s")"
		imgbackup -q -n "$(printf p%02d "$s")" -c "$cache/changes/$(printf step%02d.list "$s")" "$c" "$cache/work.raw"
	done
	cmp "$cache/work.raw" "$disk_d" || die "the depth chain's last disk differs from $disk_d"
	rm -f "$cache/work.raw"
	mv "$c" "$cache/chain-d$depth"
fi
full "$cache/chain-d$depth-flat" "$(printf p%02d "$depth")" "$disk_d"
if [[ ! -f $cache/z-d$depth.qcow2 ]]; then
	log "qemu-img/qemu-io: zstd qcow2 backing chain of depth $depth"
	parent=$dir/in-sparse/z.qcow2
	rm -f "$cache"/zc-*.qcow2
	for ((s = 1; s <= depth; s++)); do
		child=$cache/$(printf zc-%02d.qcow2 "$s")
		qemu-img create -q -f qcow2 -o compression_type=zstd -b "$parent" -F qcow2 "$child"
		cmds=()
		k=0
		while read -r off len; do
			cmds+=(-c "write -q -c -s $cache/changes/$(printf 'step%02d-%02d.bin' "$s" "$k") $off $len")
			k=$((k + 1))
		done <"$cache/changes/$(printf step%02d.list "$s")"
		qemu-io -f qcow2 "${cmds[@]}" "$child" >/dev/null
		parent=$child
	done
	qemu-img compare -q -f qcow2 -F raw "$parent" "$disk_d" || die "the qcow2 chain differs from $disk_d"
	ln -sfn "$(basename "$parent")" "$cache/z-d$depth.qcow2"
fi
if [[ ! -f $cache/z-d$depth-flat.qcow2 ]]; then
	log "qemu-img convert: zstd qcow2 of the depth-$depth content"
	qemu-img convert -O qcow2 -c -o compression_type=zstd "$disk_d" "$cache/z-flat.tmp"
	mv "$cache/z-flat.tmp" "$cache/z-d$depth-flat.qcow2"
fi

# Boot disk (needs the Debian cloud kernel; (d) is skipped without it).
boot_ok=1
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
	boot_ok=0
	log "no qemu-system-x86_64: boot time skipped"
elif [[ ! -d $cache/chain-boot ]]; then
	if bootdisk_fetch_kernel "${BOOTDISK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imgchain-bootdisk}" >/dev/null &&
		bootdisk_create "$cache/boot.raw.tmp" "imgchain bench boot"; then
		mv "$cache/boot.raw.tmp" "$cache/boot.raw"
		full "$cache/chain-boot" boot "$cache/boot.raw"
	else
		boot_ok=0
		log "cannot build the boot disk (kernel not fetched?): boot time skipped"
	fi
fi

# ---- targets -------------------------------------------------------------------------------
# up TARGET: mount / export it, set FILE to the disk to read.  down: undo.
declare -A CHAIN_OF=(
	[im]=$dir/in-sparse/chain [im1]=$cache/chain-d$depth-flat [im30]=$cache/chain-d$depth
	[imboot]=$cache/chain-boot [dim]=$dir/in-dense/chain)
declare -A QCOW_OF=(
	[qz]=$dir/in-sparse/z.qcow2 [ql]=$dir/in-sparse/l.qcow2 [qz1]=$cache/z-d$depth-flat.qcow2
	[qz30]=$cache/z-d$depth.qcow2 [dqz]=$dir/in-dense/z.qcow2 [dql]=$dir/in-dense/l.qcow2)
declare -A LABEL=(
	[raw]="source raw file, no FUSE (reference)"
	[im]="imgmount disk.raw"
	[qz]="qemu-storage-daemon FUSE, zstd qcow2"
	[ql]="qemu-storage-daemon FUSE, LUKS qcow2"
	[im1]="imgmount, depth 1 (same content as d$depth)"
	[im30]="imgmount, depth $depth, newest point"
	[qz1]="qsd FUSE zstd qcow2, depth 1"
	[qz30]="qsd FUSE zstd qcow2, depth $depth backing chain"
	[dim]="dense: imgmount disk.raw"
	[dqz]="dense: qsd FUSE, zstd qcow2"
	[dql]="dense: qsd FUSE, LUKS qcow2")
READY=0
FILE=
up() {
	local t=$1 i s
	s=$(now)
	case $t in
	raw) FILE=$disk ;;
	im* | dim)
		imgmount -f "${CHAIN_OF[$t]}" "$MNT" 2>>"$run/imgmount.log" &
		IM_PID=$!
		for ((i = 0; i < 600; i++)); do
			mountpoint -q "$MNT" && break
			kill -0 "$IM_PID" 2>/dev/null || { cat "$run/imgmount.log" >&2; IM_PID=; die "imgmount ${CHAIN_OF[$t]} died before mounting"; }
			sleep 0.02
		done
		mountpoint -q "$MNT" || die "imgmount ${CHAIN_OF[$t]} not ready after 12 s"
		FILE=$MNT/latest/disk.raw
		;;
	q* | dq*)
		local secret=() luks=
		if [[ $t == ql || $t == dql ]]; then
			secret=(--object 'secret,id=s,data=pw')
			luks=,encrypt.format=luks,encrypt.key-secret=s
		fi
		: >"$QFILE"
		qemu-storage-daemon "${secret[@]}" \
			--blockdev "driver=qcow2,file.driver=file,file.filename=${QCOW_OF[$t]},node-name=n,read-only=on$luks" \
			--export type=fuse,id=e,node-name=n,mountpoint="$QFILE" >>"$run/qsd.log" 2>&1 &
		QSD_PID=$!
		for ((i = 0; i < 600; i++)); do
			grep -qF " $QFILE " /proc/self/mounts && break
			kill -0 "$QSD_PID" 2>/dev/null || { cat "$run/qsd.log" >&2; QSD_PID=; die "qemu-storage-daemon ${QCOW_OF[$t]} died"; }
			sleep 0.02
		done
		grep -qF " $QFILE " /proc/self/mounts || die "qemu-storage-daemon export not ready after 12 s"
		FILE=$QFILE
		;;
	esac
	READY=$(echo "$(now) - $s" | bc -l)
}
down() {
	stop_im
	stop_qsd
}

# CPU seconds (user + system) the server of the target up now used so far ("-": none)
srv_cpu() {
	local pid=${IM_PID:-$QSD_PID}
	[[ -n $pid ]] || { echo -; return; }
	awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / hz }' "/proc/$pid/stat"
}
# seq_read TARGET: RES = seconds to read the whole disk, cold, CPU = the server's CPU
# seconds (no subshell: a failure must leave the daemons to this shell's cleanup)
RES=
CPU=
seq_read() {
	local s e c0
	up "$1"
	drop
	c0=$(srv_cpu)
	s=$(now)
	timeout 300 dd if="$FILE" of=/dev/null bs=1M status=none || die "$1: dd failed"
	e=$(now)
	CPU=-
	[[ $c0 == - ]] || CPU=$(echo "$(srv_cpu) - $c0" | bc -l | xargs printf '%.2f')
	down
	RES=$(echo "$e - $s" | bc -l)
}
# warm TARGET: read the files behind TARGET into the page cache
warm() {
	local f
	case $1 in
	raw) f=("$disk") ;;
	im* | dim) f=("${CHAIN_OF[$1]}"/*) ;;
	qz30) f=("$dir/in-sparse/z.qcow2" "$cache"/zc-*.qcow2) ;;
	q* | dq*) f=("${QCOW_OF[$1]}") ;;
	esac
	cat "${f[@]}" >/dev/null
}
# rand_read TARGET cold|warm: RES = fio random 4 KiB read IOPS (2 jobs, O_DIRECT, psync) on a
# fresh mount / daemon, with the page cache dropped (cold) or holding the files behind TARGET
rand_read() {
	up "$1"
	drop
	[[ $2 == warm ]] && warm "$1"
	timeout $((fio_rt + 60)) fio --name=r --filename="$FILE" --readonly --rw=randread --bs=4k \
		--direct=1 --ioengine=psync --numjobs=2 --runtime="$fio_rt" --time_based --group_reporting \
		--output-format=json --output="$run/fio.json" >/dev/null 2>"$run/fio.err" ||
		{ cat "$run/fio.err" >&2; die "$1: fio failed"; }
	down
	RES=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.0f" % j["jobs"][0]["read"]["iops"])' "$run/fio.json")
}

targets=(raw im qz ql dim dqz dql im1 im30 qz1 qz30)
cold_targets=" im qz ql dim dqz dql im1 im30 "   # the ones the targets use: cold random costs the most time
declare -A SEQ=() CPUS=() RND=() RNDW=()
bytes=$((size * 1048576))
data=$(du -B1 "$disk" | cut -f1)
start=$(now)
load0=$(cut -d' ' -f1-3 /proc/loadavg)

# (a) + (c) sequential, runs interleaved across targets
declare -A seqs=() cpus=()
for ((r = 1; r <= runs; r++)); do
	for t in "${targets[@]}"; do
		seq_read "$t"
		seqs[$t]+="$RES "
		cpus[$t]+="$CPU "
		log "seq run $r: ${LABEL[$t]}: $(echo "$RES" | xargs printf '%.2f') s, server CPU $CPU s"
	done
	log "sequential run $r/$runs done"
done
for t in "${targets[@]}"; do
	SEQ[$t]=$(printf '%s\n' ${seqs[$t]} | median)
	CPUS[$t]=$(printf '%s\n' ${cpus[$t]} | median)
done
# (b) + (c) random, cold and warm
declare -A rnds=() rndws=()
for ((r = 1; r <= fio_runs || r <= fio_cold_runs; r++)); do
	for t in "${targets[@]}"; do
		if ((r <= fio_cold_runs)) && [[ $cold_targets == *" $t "* ]]; then
			rand_read "$t" cold
			rnds[$t]+="$RES "
		fi
		if ((r <= fio_runs)); then
			rand_read "$t" warm
			rndws[$t]+="$RES "
		fi
	done
	log "random run $r done"
done
for t in "${targets[@]}"; do
	RND[$t]=$(printf '%s\n' ${rnds[$t]:--} | median)
	RNDW[$t]=$(printf '%s\n' ${rndws[$t]} | median)
done
# startup: imgmount ready time at depth 1 and depth DEPTH (index only, no image read whole)
drop; up im1; ready1=$READY; down
drop; up im30; ready30=$READY; down

# (d) boot, cold, interleaved
boot_raw='' boot_im=''
if ((boot_ok)); then
	export BOOTDISK_TIMEOUT=120
	br=() bm=()
	for ((r = 1; r <= boot_runs; r++)); do
		drop
		s=$(now)
		timeout 180 bash -c 'source "$1"; bootdisk_boot "$2" raw snapshot=on' _ "$top/tests/lib/mkbootdisk.sh" \
			"$cache/boot.raw" >/dev/null || die "boot of the raw file failed"
		br+=("$(echo "$(now) - $s" | bc -l)")
		up imboot
		drop
		s=$(now)
		timeout 180 bash -c 'source "$1"; bootdisk_boot "$2" vmdk snapshot=on' _ "$top/tests/lib/mkbootdisk.sh" \
			"$MNT/latest/disk.vmdk" >/dev/null || die "boot of the mount's disk.vmdk failed"
		bm+=("$(echo "$(now) - $s" | bc -l)")
		down
		log "boot run $r/$boot_runs done"
	done
	boot_raw=$(printf '%s\n' "${br[@]}" | median)
	boot_im=$(printf '%s\n' "${bm[@]}" | median)
fi

# ---- report --------------------------------------------------------------------------------
mbs() { echo "scale=0; $bytes / 1048576 / $1" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l | sed 's/^\./0./'; }
verdict() { if (($(echo "$1" | bc -l))); then echo "ok"; else echo "MISSED"; fi; }
changed=$(cat "$cache"/changes/step*.list | awk '{s+=$2} END{print s+0}')
echo
echo "imgmount read benchmark: ${size} MiB disk ($((data / 1048576)) MiB allocated), nproc $(nproc), $(uname -r)"
echo "load average at start $load0, at end $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every figure)"
echo "seq: dd bs=1M of the whole disk, $([[ $cold == 1 ]] && echo "cold (drop_caches + fresh mount/daemon)" || echo "WARM (not root)"), median of $runs"
echo "rand: fio randread 4k --direct=1 psync numjobs=2 ${fio_rt}s, fresh mount/daemon; cold: page cache dropped,"
echo "      median of $fio_cold_runs; warm: the files behind the target in the page cache, median of $fio_runs"
echo "      (the raw reference reads with O_DIRECT from the host disk either way)"
echo "depth: $depth incrementals of 16 random 64 KiB blocks ($((changed / 1048576)) MiB changed in all)"
echo "dense: the dense disk, $(($(du -B1 "$dense" | cut -f1) / 1048576)) MiB allocated; CPU s: the server's user + system seconds in the seq run (median)"
printf '%-48s %8s %10s %7s %10s %10s\n' "target" "seq s" "seq MiB/s" "CPU s" "rand cold" "rand warm"
for t in "${targets[@]}"; do
	printf '%-48s %8.2f %10s %7s %10s %10s\n' "${LABEL[$t]}" "${SEQ[$t]}" "$(mbs "${SEQ[$t]}")" "${CPUS[$t]}" "${RND[$t]}" "${RNDW[$t]}"
done
best_seq=${SEQ[qz]}
(($(echo "${SEQ[ql]} < $best_seq" | bc -l))) && best_seq=${SEQ[ql]}
best_rnd=${RND[qz]}
((RND[ql] > best_rnd)) && best_rnd=${RND[ql]}
best_rndw=${RNDW[qz]}
((RNDW[ql] > best_rndw)) && best_rndw=${RNDW[ql]}
r_seq=$(ratio "$best_seq" "${SEQ[im]}")
dbest_seq=${SEQ[dqz]}
(($(echo "${SEQ[dql]} < $dbest_seq" | bc -l))) && dbest_seq=${SEQ[dql]}
dbest_rnd=${RND[dqz]}
((RND[dql] > dbest_rnd)) && dbest_rnd=${RND[dql]}
dr_seq=$(ratio "$dbest_seq" "${SEQ[dim]}")
dr_rnd=$(ratio "${RND[dim]}" "$dbest_rnd")
r_rnd=$(ratio "${RND[im]}" "$best_rnd")
d_seq=$(ratio "${SEQ[im1]}" "${SEQ[im30]}")
d_rnd=$(ratio "${RND[im30]}" "${RND[im1]}")
r_rndw=$(ratio "${RNDW[im]}" "$best_rndw")
d_rndw=$(ratio "${RNDW[im30]}" "${RNDW[im1]}")
q_seq=$(ratio "${SEQ[qz1]}" "${SEQ[qz30]}")
q_rnd=$(ratio "${RNDW[qz30]}" "${RNDW[qz1]}")
echo
printf '%-62s %6s  %-14s %s\n' "ratio" "value" "target" "verdict"
printf '%-62s %6s  %-14s %s\n' "seq: imgmount / better qemu peer (throughput)" "$r_seq" ">= 2" "$(verdict "$r_seq >= 2")"
printf '%-62s %6s  %-14s %s\n' "rand cold: imgmount / better qemu peer (IOPS)" "$r_rnd" ">= 2" "$(verdict "$r_rnd >= 2")"
printf '%-62s %6s  %-14s %s\n' "rand warm: imgmount / better qemu peer (IOPS)" "$r_rndw" ">= 2" "$(verdict "$r_rndw >= 2")"
printf '%-62s %6s  %-14s %s\n' "dense seq: imgmount / better qemu peer (throughput)" "$dr_seq" ">= 2" "$(verdict "$dr_seq >= 2")"
printf '%-62s %6s  %-14s %s\n' "dense rand cold: imgmount / better qemu peer (IOPS)" "$dr_rnd" ">= 2" "$(verdict "$dr_rnd >= 2")"
printf '%-62s %6s  %-14s %s\n' "seq: imgmount depth $depth / depth 1 (throughput)" "$d_seq" ">= 0.90" "$(verdict "$d_seq >= 0.90")"
printf '%-62s %6s  %-14s %s\n' "rand cold: imgmount depth $depth / depth 1 (IOPS)" "$d_rnd" ">= 0.90" "$(verdict "$d_rnd >= 0.90")"
printf '%-62s %6s  %-14s %s\n' "rand warm: imgmount depth $depth / depth 1 (IOPS)" "$d_rndw" ">= 0.90" "$(verdict "$d_rndw >= 0.90")"
printf '%-62s %6s  %-14s %s\n' "seq: qsd zstd qcow2 depth $depth / depth 1 (comparison)" "$q_seq" "-" "-"
printf '%-62s %6s  %-14s %s\n' "rand warm: qsd zstd qcow2 depth $depth / depth 1 (comparison)" "$q_rnd" "-" "-"
if ((boot_ok)); then
	b=$(ratio "$boot_im" "$boot_raw")
	printf '%-62s %6s  %-14s %s\n' "$(printf "boot: mount's disk.vmdk / raw file (%.2f s / %.2f s)" "$boot_im" "$boot_raw")" "$b" "<= 1.3" "$(verdict "$b <= 1.3")"
else
	printf '%-62s %6s  %-14s %s\n' "boot: mount's disk.vmdk / raw file" "-" "<= 1.3" "skipped"
fi
# anything imgmount logged beyond its mount / unmount lines
if [[ -s $run/imgmount.log ]] && grep -qvE ' mounted on .*restore points|: unmounting$' "$run/imgmount.log"; then
	echo "imgmount logged:"
	grep -vE ' mounted on .*restore points|: unmounting$' "$run/imgmount.log" | sort | uniq -c | head -n 20
fi
printf 'imgmount ready (cold): depth 1 %.2f s, depth %d %.2f s; benchmark took %.0f s\n' \
	"$ready1" "$depth" "$ready30" "$(echo "$(now) - $start" | bc -l)"
