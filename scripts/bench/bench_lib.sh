# bench_lib.sh: what the benchmarks share (sourced, not run): the realistic test disks of
# tests/lib/mkdisk.sh, made once and cached in the bench directory.
#   bench_disk DIR SIZE_MIB       sets disk=DIR/disk-SIZEm.raw (mkdisk_create, once)
#   bench_disk_1pct DIR SIZE_MIB  also sets new=DIR/disk-SIZEm-1pct.raw: that disk after one
#                                 mkdisk_mutate round (about 1% of its 64 KiB blocks), once
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/tests/lib/mkdisk.sh"

bench_disk()
{
	mkdir -p "$1"
	disk="$1/disk-${2}m.raw"
	if [ ! -f "$disk" ]; then
		echo "bench: creating a ${2} MiB disk of real files (once, cached in $1)"
		mkdisk_create "$disk.tmp" "$2"
		mv "$disk.tmp" "$disk"
	fi
}

bench_disk_1pct()
{
	bench_disk "$1" "$2"
	new="$1/disk-${2}m-1pct.raw"
	if [ ! -f "$new" ]; then
		cp --sparse=always "$disk" "$new.tmp"
		mkdisk_mutate "$new.tmp" 1
		mv "$new.tmp" "$new"
	fi
}

# bench_disk_dense DIR SIZE_MIB   sets dense=DIR/dense-SIZEm.raw (once): an MBR disk whose one
#   ext4 partition (the whole disk but its first MiB) is about 85% full of real ELF binaries
#   and shared libraries from /usr (distinct files, hard-linked into a staging tree beside the
#   disk and copied in by mkfs.ext4 -d; copies of the same files only if /usr holds too few):
#   far denser than bench_disk's disk, whose ext4 is about half empty and partly zeros.
bench_disk_dense()
{
	mkdir -p "$1"
	dense="$1/dense-${2}m.raw"
	[ -f "$dense" ] && return 0
	echo "bench: creating a dense ${2} MiB disk of binaries and libraries (once, cached in $1)"
	local stage="$1/.dense-stage" ext_mib=$(($2 - 1))
	rm -rf "$stage" "$dense.tmp"
	mkdir -p "$stage"
	# regular files of 4 KiB and more, sorted in each root, without following links or mounts
	local r
	for r in /usr/lib /usr/bin /usr/sbin /usr/libexec /usr/lib64 /opt; do
		[ -d "$r" ] && find "$r" -xdev -type f -size +3k -print0 2>/dev/null | LC_ALL=C sort -z
	done |
	python3 -c "$(cat <<-'PY'
		import os, shutil, sys
		stage, budget = sys.argv[1], int(sys.argv[2])
		def elf(path):
		    try:
		        with open(path, "rb") as f:
		            return f.read(4) == b"\x7fELF"
		    except OSError:
		        return False
		files, seen = [], set()
		for path in sys.stdin.buffer.read().decode(errors="surrogateescape").split("\0"):
		    try:
		        st = os.lstat(path)
		    except OSError:
		        continue
		    if st.st_size >= 4096 and (st.st_dev, st.st_ino) not in seen and elf(path):
		        seen.add((st.st_dev, st.st_ino))
		        files.append((path, st.st_size))
		total, n, rnd = 0, 0, 0
		while total < budget and files:
		    for path, size in files:
		        if total + size > budget:
		            continue
		        dst = os.path.join(stage, "c%d" % rnd, path.lstrip("/"))
		        os.makedirs(os.path.dirname(dst), exist_ok=True)
		        try:
		            if rnd == 0:
		                os.link(path, dst)
		            else:
		                shutil.copyfile(path, dst)
		        except OSError:
		            shutil.copyfile(path, dst)
		        total, n = total + size, n + 1
		    rnd += 1
		    if budget - total < 65536 or rnd > 8:
		        break
		print("bench: %d files, %d MiB, %d pass(es) over /usr" % (n, total >> 20, rnd))
	PY
	)" "$stage" $((ext_mib * 1048576 * 85 / 100)) || return 1
	truncate -s "${2}M" "$dense.tmp"
	printf 'label: dos\nstart=2048, type=83\n' |
		sfdisk --no-reread --no-tell-kernel -q "$dense.tmp" >/dev/null || return 1
	mkfs.ext4 -q -F -b 4096 -m 0 -L imgchain-dense -E offset=1048576,nodiscard \
		-d "$stage" "$dense.tmp" "${ext_mib}M" || return 1
	rm -rf "$stage"
	mv "$dense.tmp" "$dense"
}

# bench_inputs DISK OUT   the read benchmarks' inputs for DISK, built once in OUT (rebuilt when
#   DISK changes; imgbackup and qemu-img from PATH, IMGCHAIN_PASSPHRASE set by the caller):
#   OUT/chain (a one-point chain, point "full"), OUT/z.qcow2 (zstd-compressed qcow2) and
#   OUT/l.qcow2 (LUKS-encrypted qcow2, secret "pw").
bench_inputs()
{
	local disk=$1 out=$2 stamp
	stamp="$(stat -c '%s %Y' "$disk") inputs v1"
	if [ ! -f "$out/stamp" ] || [ "$(cat "$out/stamp")" != "$stamp" ]; then
		rm -rf "$out"
		mkdir -p "$out"
		echo "$stamp" >"$out/stamp"
	fi
	if [ ! -d "$out/chain" ]; then
		echo "bench: imgbackup full of ${disk##*/} -> $out/chain"
		rm -rf "$out/chain.tmp"
		imgbackup -q -n full "$out/chain.tmp" "$disk" || return 1
		mv "$out/chain.tmp" "$out/chain"
	fi
	if [ ! -f "$out/z.qcow2" ]; then
		echo "bench: qemu-img convert: zstd qcow2 of ${disk##*/}"
		qemu-img convert -O qcow2 -c -o compression_type=zstd "$disk" "$out/z.qcow2.tmp" ||
			return 1
		mv "$out/z.qcow2.tmp" "$out/z.qcow2"
	fi
	if [ ! -f "$out/l.qcow2" ]; then
		echo "bench: qemu-img convert: LUKS qcow2 of ${disk##*/}"
		# LUKS times its PBKDF on creation, which fails now and then on a loaded machine
		# ("Unable to get accurate CPU usage"): try again
		for _ in 1 2 3 4 5; do
			if qemu-img convert -O qcow2 --object secret,id=s,data=pw \
				-o encrypt.format=luks,encrypt.key-secret=s "$disk" "$out/l.qcow2.tmp"; then
				mv "$out/l.qcow2.tmp" "$out/l.qcow2"
				break
			fi
			sleep 1
		done
		[ -f "$out/l.qcow2" ] || return 1
	fi
}

# bench_mount IMGMOUNT DIR ARGS...: IMGMOUNT -f ARGS... in the background, its messages in
# DIR/mount.log; sets mpid; exits when the mount is not ready after 20 s
bench_mount()
{
	local bin=$1 d=$2 _
	shift 2
	"$bin" -f "$@" 2>"$d/mount.log" &
	mpid=$!
	for _ in $(seq 400); do mountpoint -q "$d/mnt" && return 0; sleep 0.05; done
	echo "mount failed: $(cat "$d/mount.log")" >&2
	exit 1
}
