#!/bin/bash
# mkbootdisk.sh: a raw disk that boots under qemu (SeaBIOS, TCG), prints a marker read from its
# own FAT partition, records that it booted by writing to that partition, and powers off.
#
# Source it for the functions, or run it:
#   bash tests/lib/mkbootdisk.sh --fetch-kernel CACHE_DIR
#   bash tests/lib/mkbootdisk.sh --create OUT MARKER [SIZE_MIB]
#   bash tests/lib/mkbootdisk.sh --set-marker DISK MARKER
#   bash tests/lib/mkbootdisk.sh --boot DISK FORMAT [DRIVE_OPT...]
#   bash tests/lib/mkbootdisk.sh --read-guest-write DISK
#
# Functions (each runs in its own bash process under `set -euo pipefail`):
#   bootdisk_fetch_kernel CACHE_DIR
#       Prints the path of a Debian cloud kernel (vmlinuz) extracted under CACHE_DIR, downloading
#       the package that linux-image-cloud-amd64 depends on the first time only (apt-get
#       download + dpkg-deb -x; runs apt-get update once if apt has no lists). Safe to call
#       from parallel tests (flock).
#   bootdisk_create OUT MARKER [SIZE_MIB]
#       MBR disk (default 64 MiB, minimum 40) with one active FAT32 partition holding syslinux,
#       the kernel, an initramfs (busybox-static + the virtio and vfat modules) and MARKER.TXT.
#       The kernel comes from bootdisk_fetch_kernel "$BOOTDISK_CACHE" (default
#       ${XDG_CACHE_HOME:-$HOME/.cache}/imgchain-bootdisk).
#   bootdisk_set_marker DISK MARKER
#       Rewrites MARKER.TXT in place with mtools: a few 512-byte sectors change.
#   bootdisk_boot DISK FORMAT [DRIVE_OPT...]   (DISK may be a URI: nbd+unix://, iscsi://)
#       Boots DISK (any qemu format: raw, vmdk, qcow2...) as a virtio disk, with each DRIVE_OPT
#       appended to -drive (e.g. snapshot=on, readonly=on, cache=none). Prints the guest's
#       "IMGCHAIN-MARKER: <marker>" line; fails if it does not appear within $BOOTDISK_TIMEOUT
#       seconds (default 120). The whole console goes to $BOOTDISK_LOG if that is set.
#       BOOTDISK_ACCEL (default tcg) is passed to qemu -accel.
#       On each boot the guest appends "boot N marker <marker>" to GUEST.LOG on the partition
#       and prints "IMGCHAIN-GUEST-WRITE: ok N", or "read-only" when the disk cannot be written.
#   bootdisk_read_guest_write DISK
#       Prints GUEST.LOG (the lines the guest appended); fails if the guest never wrote.
#
# MARKER: printable ASCII without newline, at most 200 characters.

BOOTDISK_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/mkbootdisk.sh

bootdisk_fetch_kernel()     { bash "$BOOTDISK_LIB" --fetch-kernel "$@"; }
bootdisk_create()           { bash "$BOOTDISK_LIB" --create "$@"; }
bootdisk_set_marker()       { bash "$BOOTDISK_LIB" --set-marker "$@"; }
bootdisk_boot()             { bash "$BOOTDISK_LIB" --boot "$@"; }
# bootdisk_expect NAME DISK FORMAT MARKER WRITE [DRIVE_OPT...]: for tests (functions.sh's fail):
# bootdisk_boot with the console in $TESTDIR/console-NAME.log; fails unless the guest printed
# MARKER and, when WRITE is not empty, "IMGCHAIN-GUEST-WRITE: WRITE".
bootdisk_expect() {
	local name=$1 disk=$2 format=$3 marker=$4 write=$5 out s=$SECONDS log
	shift 5
	log=$TESTDIR/console-$name.log
	out=$(BOOTDISK_LOG=$log bootdisk_boot "$disk" "$format" "$@") || {
		[[ -f $log ]] && tail -n 30 "$log" >&2
		fail "$name: $disk did not boot"
	}
	[[ $out == "IMGCHAIN-MARKER: $marker" ]] || fail "$name: printed '$out', expected marker '$marker'"
	[[ -z $write ]] || grep -aq "IMGCHAIN-GUEST-WRITE: $write\$" "$log" ||
		fail "$name: guest did not report 'IMGCHAIN-GUEST-WRITE: $write'"
	echo "$name: $disk ${*:-writable} -> $out ($((SECONDS - s)) s)"
}
# bootdisk_chain CHAIN MARKER_A MARKER_B: for tests: the boot disk with MARKER_A backed up as
# point pa, then with MARKER_B as pb, into CHAIN; their sources kept as srcA.raw, srcB.raw.
bootdisk_chain() {
	bootdisk_create src.raw "$2" || fail "bootdisk_create failed"
	cp --sparse=always src.raw srcA.raw
	imgbackup -q -n pa "$1" src.raw || fail "imgbackup of point A failed"
	bootdisk_set_marker src.raw "$3" || fail "bootdisk_set_marker failed"
	cmp -s src.raw srcA.raw && fail "the marker change did not change the disk"
	mv src.raw srcB.raw
	imgbackup -q -n pb "$1" srcB.raw || fail "imgbackup of point B failed"
}
bootdisk_read_guest_write() { bash "$BOOTDISK_LIB" --read-guest-write "$@"; }

# Everything below runs only in the child process.

_BOOTDISK_KERNEL_META=${BOOTDISK_KERNEL_META:-linux-image-cloud-amd64}
# Modules the initramfs loads; their dependencies are added from each module's modinfo.
_BOOTDISK_MODULES="virtio_pci virtio_blk vfat nls_cp437 nls_ascii nls_utf8"

_bootdisk_die() { echo "mkbootdisk: $*" >&2; exit 1; }

_bootdisk_need() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 || _bootdisk_die "missing tool: $t (see scripts/deps.txt)"
	done
}

_BOOTDISK_WORK=
_bootdisk_workdir() {
	_BOOTDISK_WORK=$(mktemp -d "${TMPDIR:-/tmp}/mkbootdisk.XXXXXX")
	trap 'rm -rf "$_BOOTDISK_WORK"' EXIT
}

_bootdisk_check_marker() {
	[[ $1 =~ ^[[:print:]]{1,200}$ ]] || _bootdisk_die "MARKER must be 1-200 printable characters"
}

# Byte offset of the FAT partition (the first of type c).
_bootdisk_fat_offset() {
	local off
	off=$(bash "$(dirname "$BOOTDISK_LIB")/mkdisk.sh" --layout "$1" | awk '$4 == "c" { print $2; exit }')
	[[ -n $off ]] || _bootdisk_die "$1 has no FAT32 (type c) partition"
	echo "$off"
}

_bootdisk_fetch_kernel() {
	local cache=$1 pkg work vmlinuz
	mkdir -p "$cache"
	cache=$(cd "$cache" && pwd)
	exec 9>"$cache/.lock"
	flock 9
	vmlinuz=$(find -L "$cache/current/boot" -maxdepth 1 -name "vmlinuz-*" 2>/dev/null | head -n1 || true)
	if [[ -n $vmlinuz ]]; then
		echo "$vmlinuz"
		return
	fi
	_bootdisk_need apt-cache apt-get dpkg-deb
	_bootdisk_resolve() {
		{ apt-cache depends "$_BOOTDISK_KERNEL_META" 2>/dev/null || true; } \
			| awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
	}
	pkg=$(_bootdisk_resolve)
	if [[ -z $pkg && $(id -u) == 0 ]]; then
		apt-get update -qq >/dev/null 2>&1 || true
		pkg=$(_bootdisk_resolve)
	fi
	[[ -n $pkg ]] || _bootdisk_die "apt cannot resolve $_BOOTDISK_KERNEL_META to a kernel package"
	work=$(mktemp -d "$cache/download.XXXXXX")
	# As root apt would hand the download to the _apt user, who cannot write to $work.
	(cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null 2>"$work/err") \
		|| { rm -rf "$work"; _bootdisk_die "apt-get download $pkg failed"; }
	dpkg-deb -x "$work"/*.deb "$work/root" || { rm -rf "$work"; _bootdisk_die "dpkg-deb -x failed"; }
	rm -rf "${cache:?}/$pkg"
	mv "$work/root" "$cache/$pkg"
	rm -rf "$work"
	ln -sfn "$pkg" "$cache/current"
	vmlinuz=$(find "$cache/$pkg/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n1)
	[[ -n $vmlinuz ]] || _bootdisk_die "$pkg has no /boot/vmlinuz-*"
	echo "$vmlinuz"
}

# Copies module NAME and, first, what it depends on into DEST, appending load order to DEST/order.
_bootdisk_add_module() {
	local kmods=$1 dest=$2 name=$3 file dep deps
	grep -qx "$name" "$dest/order" 2>/dev/null && return 0
	# Module names use "_" where file names may use "-" (nls_iso8859-1.ko).
	file=$(find "$kmods/kernel" -name "${name//_/[_-]}.ko*" -print -quit)
	if [[ -z $file ]]; then
		# Built into this kernel: nothing to load.
		grep -q "/$name.ko" "$kmods/modules.builtin" 2>/dev/null && return 0
		_bootdisk_die "kernel module $name not found under $kmods"
	fi
	case $file in
	*.ko) cp "$file" "$dest/$name.ko" ;;
	*.ko.xz) xz -dc "$file" >"$dest/$name.ko" ;;
	*.ko.zst) zstd -qdc "$file" >"$dest/$name.ko" ;;
	*.ko.gz) gzip -dc "$file" >"$dest/$name.ko" ;;
	*) _bootdisk_die "unknown module compression: $file" ;;
	esac
	deps=$(tr '\0' '\n' <"$dest/$name.ko" | sed -n 's/^depends=//p' | head -n1)
	for dep in ${deps//,/ }; do
		_bootdisk_add_module "$kmods" "$dest" "${dep//-/_}"
	done
	echo "$name" >>"$dest/order"
}

# The guest's /init. Runs under busybox sh; every path ends in poweroff so qemu exits.
_bootdisk_init_script() {
	cat <<-'EOF'
		#!/bin/busybox sh
		# imgchain boot test: print the disk's marker, record the boot on the disk, power off.
		/bin/busybox --install -s /bin
		export PATH=/bin
		mount -t devtmpfs devtmpfs /dev
		exec </dev/console >/dev/console 2>&1
		mount -t proc proc /proc
		mount -t sysfs sysfs /sys
		for m in $(cat /lib/modules/order); do
			insmod "/lib/modules/$m.ko" || echo "IMGCHAIN-ERROR: insmod $m failed"
		done
		i=0
		while [ ! -b /dev/vda1 ] && [ $i -lt 300 ]; do
			usleep 100000
			i=$((i + 1))
		done
		# busybox mount falls back to read-only by itself on a read-only disk: ask /proc/mounts.
		mount -t vfat -o rw,flush /dev/vda1 /mnt 2>/dev/null \
			|| mount -t vfat -o ro /dev/vda1 /mnt || echo "IMGCHAIN-ERROR: cannot mount /dev/vda1"
		mode=$(awk '$2 == "/mnt" { split($4, o, ","); print o[1] }' /proc/mounts)
		if [ -r /mnt/MARKER.TXT ]; then
			echo "IMGCHAIN-MARKER: $(head -n 1 /mnt/MARKER.TXT | tr -d '\r')"
		else
			echo "IMGCHAIN-ERROR: no MARKER.TXT"
		fi
		if [ $mode = rw ]; then
			n=$(($(cat /mnt/GUEST.LOG 2>/dev/null | wc -l) + 1))
			echo "boot $n marker $(head -n 1 /mnt/MARKER.TXT | tr -d '\r')" >>/mnt/GUEST.LOG \
				&& sync && echo "IMGCHAIN-GUEST-WRITE: ok $n" \
				|| echo "IMGCHAIN-ERROR: write failed"
		else
			echo "IMGCHAIN-GUEST-WRITE: read-only"
		fi
		umount /mnt 2>/dev/null
		sync
		echo "IMGCHAIN-POWEROFF"
		poweroff -f
	EOF
}

_bootdisk_build_initrd() {
	local vmlinuz=$1 out=$2 kver kmods root bb
	kver=${vmlinuz##*/vmlinuz-}
	kmods=$(dirname "$(dirname "$vmlinuz")")/lib/modules/$kver
	[[ -d $kmods ]] || kmods=$(dirname "$(dirname "$vmlinuz")")/usr/lib/modules/$kver
	[[ -d $kmods ]] || _bootdisk_die "no modules for $kver next to $vmlinuz"
	bb=$(command -v busybox) || _bootdisk_die "missing busybox (busybox-static)"
	# The initramfs has no libc: a dynamically linked busybox would not start.
	ldd "$bb" >/dev/null 2>&1 && _bootdisk_die "$bb is dynamically linked: install busybox-static"
	root=$_BOOTDISK_WORK/initramfs
	mkdir -p "$root"/{bin,dev,proc,sys,mnt,lib/modules}
	cp "$bb" "$root/bin/busybox"
	_bootdisk_init_script >"$root/init"
	chmod 755 "$root/init"
	: >"$root/lib/modules/order"
	local m
	for m in $_BOOTDISK_MODULES; do
		_bootdisk_add_module "$kmods" "$root/lib/modules" "$m"
	done
	(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) \
		| gzip -9n >"$out"
}

_bootdisk_create() {
	local out marker=$2 size_mib=${3:-64}
	out=$(realpath -m -- "$1")
	_bootdisk_check_marker "$marker"
	if ! [[ $size_mib =~ ^[0-9]+$ ]] || ((size_mib < 40)); then
		_bootdisk_die "SIZE_MIB must be a number >= 40"
	fi
	_bootdisk_need sfdisk mkfs.fat mcopy syslinux cpio gzip flock
	local mbr=/usr/lib/syslinux/mbr/mbr.bin
	[[ -r $mbr ]] || _bootdisk_die "missing $mbr (syslinux-common)"
	_bootdisk_workdir
	local w=$_BOOTDISK_WORK vmlinuz
	vmlinuz=$(_bootdisk_fetch_kernel "${BOOTDISK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imgchain-bootdisk}")
	_bootdisk_build_initrd "$vmlinuz" "$w/initrd.gz"

	# One active FAT32 partition from 1 MiB, leaving 1 MiB of zeros at the end. mtools needs
	# 65525 clusters: 512-byte clusters below 70 MiB.
	local part_mib=$((size_mib - 2)) spc=1
	while ((spc < 64 && part_mib * 2048 / (spc * 2) >= 70000)); do spc=$((spc * 2)); done
	rm -f "$out"
	truncate -s "${size_mib}M" "$out"
	sfdisk --no-reread --no-tell-kernel -q "$out" >/dev/null <<-EOF
		label: dos
		label-id: 0x1c0ffee2
		unit: sectors
		start=2048, size=$((part_mib * 2048)), type=c, bootable
	EOF
	local log
	log=$(mkfs.fat -F 32 -s "$spc" -n IMGCHAINBT -i 1C0FFEE2 -h 2048 --offset=2048 \
		"$out" $((part_mib * 1024)) 2>&1) || _bootdisk_die "mkfs.fat failed: $log"
	dd if="$mbr" of="$out" bs=440 count=1 conv=notrunc status=none

	cat >"$w/syslinux.cfg" <<-EOF
		SERIAL 0 115200
		PROMPT 0
		TIMEOUT 0
		DEFAULT imgchain
		LABEL imgchain
		  LINUX /vmlinuz
		  INITRD /initrd.gz
		  APPEND console=ttyS0 quiet panic=-1
	EOF
	printf '%s\n' "$marker" >"$w/MARKER.TXT"
	local img="$out@@$((2048 * 512))"
	mmd -i "$img" ::/syslinux
	mcopy -i "$img" "$w/syslinux.cfg" ::/syslinux/syslinux.cfg
	mcopy -i "$img" "$vmlinuz" ::/vmlinuz
	mcopy -i "$img" "$w/initrd.gz" ::/initrd.gz
	mcopy -i "$img" "$w/MARKER.TXT" ::/MARKER.TXT
	syslinux --install --offset $((2048 * 512)) --directory /syslinux "$out" \
		|| _bootdisk_die "syslinux --install failed"
}

_bootdisk_set_marker() {
	local disk=$1 marker=$2
	_bootdisk_check_marker "$marker"
	_bootdisk_workdir
	printf '%s\n' "$marker" >"$_BOOTDISK_WORK/MARKER.TXT"
	mcopy -o -i "$disk@@$(_bootdisk_fat_offset "$disk")" "$_BOOTDISK_WORK/MARKER.TXT" ::/MARKER.TXT
}

_bootdisk_read_guest_write() {
	local disk=$1
	mtype -i "$disk@@$(_bootdisk_fat_offset "$disk")" ::/GUEST.LOG 2>/dev/null \
		|| _bootdisk_die "$disk has no GUEST.LOG: the guest never wrote to it"
}

_bootdisk_boot() {
	local disk=$1 format=$2 opt drive
	shift 2
	[[ -e $disk || $disk == *://* ]] || _bootdisk_die "no such disk: $disk"
	_bootdisk_need qemu-system-x86_64 timeout
	# qemu option values escape commas by doubling them.
	drive="file=${disk//,/,,},format=$format,if=virtio"
	for opt in "$@"; do
		drive+=",$opt"
	done
	_bootdisk_workdir
	local log=$_BOOTDISK_WORK/console.log rc=0
	timeout --kill-after=10 "${BOOTDISK_TIMEOUT:-120}" \
		qemu-system-x86_64 -machine pc -accel "${BOOTDISK_ACCEL:-tcg}" -m 256 -nodefaults -nographic \
		-serial stdio -monitor none -no-reboot -drive "$drive" \
		</dev/null >"$log" 2>&1 || rc=$?
	tr -d '\r' <"$log" >"$log.txt"
	[[ -n ${BOOTDISK_LOG:-} ]] && cp "$log.txt" "$BOOTDISK_LOG"
	# Firmware and kernel terminal escapes may share the line, hence -o rather than ^.
	if ! grep -a -o -m1 'IMGCHAIN-MARKER: [[:print:]]*' "$log.txt"; then
		{
			echo "mkbootdisk: no marker from the guest (qemu exit $rc); console tail:"
			tail -n 25 "$log.txt"
		} >&2
		exit 1
	fi
	((rc == 0)) || _bootdisk_die "qemu exited with $rc (124: timed out) after printing the marker"
}

_bootdisk_main() {
	set -euo pipefail
	shopt -s inherit_errexit
	export MTOOLS_SKIP_CHECK=1 MTOOLSRC=/dev/null LC_ALL=C
	local cmd=${1:-}
	case $cmd in
	--fetch-kernel) (($# == 2)) || _bootdisk_die "usage: --fetch-kernel CACHE_DIR"; _bootdisk_fetch_kernel "$2" ;;
	--create) (($# == 3 || $# == 4)) || _bootdisk_die "usage: --create OUT MARKER [SIZE_MIB]"; shift; _bootdisk_create "$@" ;;
	--set-marker) (($# == 3)) || _bootdisk_die "usage: --set-marker DISK MARKER"; _bootdisk_set_marker "$2" "$3" ;;
	--boot) (($# >= 3)) || _bootdisk_die "usage: --boot DISK FORMAT [DRIVE_OPT...]"; shift; _bootdisk_boot "$@" ;;
	--read-guest-write) (($# == 2)) || _bootdisk_die "usage: --read-guest-write DISK"; _bootdisk_read_guest_write "$2" ;;
	*) sed -n '2,/^$/p' "$BOOTDISK_LIB" | sed 's/^# \{0,1\}//'; [[ $cmd == -h || $cmd == --help ]] ;;
	esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	_bootdisk_main "$@"
fi
