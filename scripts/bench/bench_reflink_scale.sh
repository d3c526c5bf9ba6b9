#!/usr/bin/env bash
# Does a merge on XFS (reflink) take time by metadata or by bytes?  (issue 17)
# For each disk size: a realistic disk (tests/lib/mkdisk.sh: partitions, real files, 7
# mutations of about 1% of the 64 KiB blocks each), a full and 7 incrementals, on an XFS
# made with -m reflink=1 on a sparse file, loop-mounted with direct I/O (what reaches the
# device is written, not parked in the page cache of the file under the loop device).
# Then, RUNS rounds, each timing in turn (wall and CPU seconds):
#   - imgconsolidate --merge p0..p7 (keyless) into the full, space reclaimed in the run;
#   - the same with IMGCHAIN_CONS_RECLAIM=background (the superseded records of the full
#     are punched by a detached process after the tool returned), and how long after the
#     start the full's allocation came within 1% of what the first merge left;
#   - cp --reflink=never of as many bytes as the merge shared, + fsync;
#   - qemu-img commit of the equivalent chain: the disk's first state as a raw file (a
#     reflink copy: no space), 7 qcow2 overlays (64 KiB clusters) holding the changed
#     ranges, committed into the raw base, + fsync;
# each from reflink copies of the originals, every input in the page cache, the file
# system synced before.  One inline merge more runs under strace -c -f (when strace is
# there): its system calls by kind (fallocate = hole punches, ioctl = FICLONERANGE).  One more merge, not timed, measures the peak of free space used
# (statfs every 10 ms).  Medians of the rounds are printed, and every round's figures.
#
#   scripts/bench/bench_reflink_scale.sh [BENCH_DIR]   (as root; default /var/tmp/imgchain-scale)
# Env: SIZES_MIB (default "2048 20480"), RUNS (default 3), BUILD (default ./build),
#   KEEP=1: leave the XFS mounted with its chains (BENCH_DIR/xfs), and reuse them on the
#   next call (BUILD_ONLY=1: build them and stop); DISK=random: synthetic disks of random
#   64 KiB blocks (each incremental 1% of them at random places) instead of mkdisk's.
# (The qcow2 overlays hold the blocks the incrementals hold, written with qemu-io: the
# same ranges, other bytes.)  Space: the XFS image is sparse; a 20 GiB mkdisk disk takes about 12 GiB in it, its
# chain about 7 GiB more.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-/var/tmp/imgchain-scale}
build=${BUILD:-$top/build}
runs=${RUNS:-3}
sizes=${SIZES_MIB:-2048 20480}
export PATH="$build:$PATH" IMGCHAIN_PASSPHRASE=bench IMGCHAIN_KDF=interactive
export IMGCHAIN_STATE_DIR="$dir/state"
unset IMGCHAIN_PASSPHRASE_FILE IMGCHAIN_CONS_RECLAIM
for c in imgbackup imgconsolidate qemu-img qemu-io mkfs.xfs losetup bc python3; do
	command -v "$c" >/dev/null || { echo "bench: $c not found" >&2; exit 1; }
done
source "$top/tests/lib/mkdisk.sh"
mkdir -p "$dir"
mnt="$dir/xfs"
loop=
cleanup() {
	[ -z "$loop" ] || [ -n "${KEEP:-}" ] || { umount "$mnt"; losetup -d "$loop"; rm -f "$dir/xfs.img"; }
}
trap cleanup EXIT
if mountpoint -q "$mnt"; then
	loop=$(findmnt -n -o SOURCE "$mnt")
else
	total=0
	for size in $sizes; do total=$((total + size * 3)); done
	[ -f "$dir/xfs.img" ] || { truncate -s $((total + 8192))M "$dir/xfs.img"; mkfs.xfs -q -m reflink=1 "$dir/xfs.img"; }
	loop=$(losetup -f --show --direct-io=on "$dir/xfs.img")
	mkdir -p "$mnt"
	mount "$loop" "$mnt"
fi
avail() { stat -f -c '%a %S' "$1" | awk '{printf "%.0f\n", $1 * $2}'; }
median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
# timed CMD...: runs CMD, sets T_WALL and T_CPU (user + system seconds, its children included)
timed() {
	local t0 t1 user sys
	t0=$(date +%s.%N)
	/usr/bin/time -f '%U %S' -o "$w/time.txt" "$@"
	t1=$(date +%s.%N)
	read -r user sys <"$w/time.txt"
	T_WALL=$(echo "$t1 - $t0" | bc -l)
	T_CPU=$(echo "$user + $sys" | bc -l)
}
mutate_random() {
	python3 - "$1" "$2" "$3" <<'EOF'
import random, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
nb = size * 16
with open(path, "r+b") as f:
    for _ in range(nb // 100):
        f.seek(r.randrange(nb) * 65536)
        f.write(r.randbytes(65536))
EOF
}

# changed_blocks IMAGE: "OFFSET LENGTH" of each run of blocks an incremental holds (what
# changed: comparing the disks themselves would read them whole, twice a step)
changed_blocks() {
	python3 - "$top/tests/lib" "$1" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import icimg
im = icimg.Image(sys.argv[2])
bs, run = im.header["block_size"], None
for p in sorted(e["pos"] for e in im.entries):
    if run and run[1] == p:
        run[1] = p + 1
        continue
    if run:
        print(run[0] * bs, (run[1] - run[0]) * bs)
    run = [p, p + 1]
if run:
    print(run[0] * bs, (run[1] - run[0]) * bs)
EOF
}

build_chain() {
	local size=$1 i off len
	rm -rf "$w"
	mkdir -p "$w/q.orig"
	echo "bench: building the $size MiB disk, its chain and its qcow2 chain in $w" >&2
	if [ "${DISK:-}" = random ]; then
		python3 -c 'import random, sys
r = random.Random(1)
with open(sys.argv[1], "wb") as f:
    for _ in range(int(sys.argv[2])):
        f.write(r.randbytes(1 << 20))' "$w/d" "$size"
	else
		mkdisk_create "$w/d" "$size"
	fi
	imgbackup -q -n p0 "$w/chain" "$w/d"
	cp --reflink=always "$w/d" "$w/q.orig/base.raw"
	for i in 1 2 3 4 5 6 7; do
		if [ "${DISK:-}" = random ]; then mutate_random "$w/d" "$size" "$i"; else mkdisk_mutate "$w/d" $((100 + i)) >/dev/null; fi
		imgbackup -q -n "p$i" "$w/chain" "$w/d"
		back=base.raw fmt=raw
		[ "$i" = 1 ] || { back=q$((i - 1)).qcow2; fmt=qcow2; }
		(cd "$w/q.orig" && qemu-img create -q -f qcow2 -o cluster_size=65536 -b "$back" -F $fmt "q$i.qcow2")
		args=()
		while read -r off len; do
			args+=(-c "write -q -P $((i * 29 % 250 + 1)) $off $len")
		done < <(changed_blocks "$w/chain/0000000$((i + 1)).img")
		qemu-io -f qcow2 "${args[@]}" "$w/q.orig/q$i.qcow2" >/dev/null
	done
	rm -f "$w/d"
	mv "$w/chain/imgchain.key" "$w/key"
	mv "$w/chain" "$w/chain.orig"
	touch "$w/built"
}

reset() {
	rm -rf "$w/chain" "$w/q" "$w/cpdst"
	cp -a --reflink=always "$w/chain.orig" "$w/chain"
	cp -a --reflink=always "$w/q.orig" "$w/q"
	cat "$w"/chain/*.img "$w"/q/*.qcow2 >/dev/null    # (qemu-img only writes the raw base)
	sync -f "$w/chain"
}
# merge [ENV...]: one keyless merge, timed, summary in $w/summary.txt
merge() {
	timed env "$@" imgconsolidate --merge p0..p7 "$w/chain" >"$w/summary.txt"
}
blocks() { stat -c %b "$w/chain/00000008.img"; }
# reclaimed TARGET: wait (at most 120 s) until the merged full's allocation is within 1% of
# what it was above TARGET (blocks after an inline merge) when this was called: the
# background reclaim is (almost) done; XFS trims what it preallocated when it sees fit
reclaimed() {
	local b0 i
	b0=$(blocks)
	for ((i = 0; i < 12000; i++)); do
		[ "$(blocks)" -gt $(($1 + (b0 - $1) / 100)) ] || return 0
		sleep 0.01
	done
	echo "bench: the background reclaim did not end within 120 s" >&2
}

for size in $sizes; do
	w=$mnt/s$size
	[ -f "$w/built" ] || build_chain "$size"
	[ -z "${BUILD_ONLY:-}" ] || continue
	declare -A fig=()
	rounds=""
	for r in $(seq "$runs"); do
		reset
		merge IMGCHAIN_CONS_RECLAIM=inline
		fig[m]+="$T_WALL " fig[mc]+="$T_CPU "
		fig[mp]+="$(sed -n 's/.*s (\([0-9.]*\) s punching holes).*/\1/p' "$w/summary.txt") "
		phases=$(sed -n 's/^ *time: //p' "$w/summary.txt")
		shared=$(sed -n 's/^  shared \([0-9.]*\) \([KMG]i\)B.*/\1 \2/p' "$w/summary.txt")
		target=$(blocks)

		reset
		s=$(date +%s.%N)
		merge IMGCHAIN_CONS_RECLAIM=background
		fig[b]+="$T_WALL " fig[bc]+="$T_CPU "
		reclaimed "$target"
		fig[bd]+="$(echo "$(date +%s.%N) - $s" | bc -l) "

		bytes=$(echo "$shared" | awk '{m = $2 == "Ki" ? 1024 : $2 == "Mi" ? 1048576 : 1073741824; printf "%.0f\n", $1 * m}')
		[ -f "$w/cpsrc" ] || cat "$w"/chain.orig/0000000[2-8].img | head -c "$bytes" >"$w/cpsrc" || true
		cat "$w/cpsrc" >/dev/null
		sync -f "$w/cpsrc"
		timed sh -c 'cp --reflink=never "$1" "$2" && sync "$2"' - "$w/cpsrc" "$w/cpdst"
		fig[c]+="$T_WALL " fig[cc]+="$T_CPU "

		sync -f "$w/q"
		timed sh -c 'qemu-img commit -q -b "$1/base.raw" "$1/q7.qcow2" && sync "$1/base.raw"' - "$w/q"
		fig[q]+="$T_WALL " fig[qc]+="$T_CPU "
		last() { echo "${fig[$1]}" | awk '{printf "%.3f", $NF}'; }
		rounds+="    round $r: merge $(last m) s ($phases); background $(last b) s, space back after $(last bd) s; cp $(last c) s; qemu-img commit $(last q) s; load $(cut -d' ' -f1 /proc/loadavg)
"
	done

	# the peak of free space used, in a merge of its own (not timed), for both ways
	peak=()
	for mode in inline background; do
		reset
		a0=$(avail "$mnt")
		(while :; do avail "$mnt"; sleep 0.01; done) >"$w/free.log" &
		sampler=$!
		IMGCHAIN_CONS_RECLAIM=$mode imgconsolidate --merge p0..p7 "$w/chain" >"$w/summary.txt"
		[ $mode = inline ] || reclaimed "$target"
		sync -f "$mnt"
		avail "$mnt" >>"$w/free.log"
		kill "$sampler"
		wait "$sampler" 2>/dev/null || true
		peak+=("$(echo "($a0 - $(sort -n "$w/free.log" | head -1)) / 1048576" | bc -l)")
		end_used=$(echo "($a0 - $(avail "$mnt")) / 1048576" | bc -l)
		peak+=("$end_used")
	done
	# the system calls of one inline merge (strace -c -f; not timed): what the kernel is
	# asked to do does not depend on the load
	calls=""
	if command -v strace >/dev/null; then
		reset
		IMGCHAIN_CONS_RECLAIM=inline strace -f -c -o "$w/strace.txt" imgconsolidate --merge p0..p7 "$w/chain" >/dev/null
		calls=$(awk '$NF ~ /^(fallocate|ioctl|lseek|fsync|pwrite64|pread64|unlink|rename)$/ {
			printf "%s%s %s", sep, $NF, $4; sep = ", " }' "$w/strace.txt")
	fi
	md() { printf '%s\n' ${fig[$1]} | median; }
	printf '%6s MiB disk (%s), %s rounds, medians, wall s (CPU s):\n' "$size" "${DISK:-mkdisk}" "$runs"
	printf '    merge, space reclaimed in the run       %8.3f (%.3f)   of which punching %.3f\n' "$(md m)" "$(md mc)" "$(md mp)"
	printf '    merge, reclaim in the background        %8.3f (%.3f)   space back after %.3f\n' "$(md b)" "$(md bc)" "$(md bd)"
	printf '    cp --reflink=never of %s B + fsync  %8.3f (%.3f)\n' "$shared" "$(md c)" "$(md cc)"
	printf '    qemu-img commit (qcow2 over raw) + fsync %7.3f (%.3f)\n' "$(md q)" "$(md qc)"
	printf '    cp / merge: %.2f (background: %.2f); qemu-img commit / merge: %.2f (background: %.2f)\n' \
		"$(echo "$(md c) / $(md m)" | bc -l)" "$(echo "$(md c) / $(md b)" | bc -l)" \
		"$(echo "$(md q) / $(md m)" | bc -l)" "$(echo "$(md q) / $(md b)" | bc -l)"
	printf '    free space used: peak %.1f MiB, at the end %.1f MiB (inline); peak %.1f MiB, %.1f MiB once reclaimed (background)\n' \
		"${peak[0]}" "${peak[1]}" "${peak[2]}" "${peak[3]}"
	[ -z "$calls" ] || printf '    system calls of an inline merge: %s\n' "$calls"
	printf '    last merge: %s\n' "$(sed -n 's/^  copied/copied/p; s/^  shared/shared/p' "$w/summary.txt" | tr '\n' ' ')"
	printf '%s' "$rounds"
	rm -rf "$w/chain" "$w/q" "$w/cpdst"
done
