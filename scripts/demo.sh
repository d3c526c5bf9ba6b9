#!/usr/bin/env bash
# The main job end to end on a built-in sample disk: install packages, build, make a
# partitioned disk with real file systems, back it up (full), let "a day of server
# activity" change it, back it up again (incremental), show the chain, verify it with
# and without the key, restore both points and compare them byte for byte, and (when
# built) mount the chain and check the VMDK of the newest point with qemu-img.
# The chain and the sample disks stay in demo-out/ (or $IMGCHAIN_DEMO_DIR) to look at
# afterwards; the next run of the demo starts that directory afresh.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
scripts/install-deps.sh --demo
if [ ! -x build/imgbackup ]; then
	./autogen.sh >/dev/null 2>&1
	mkdir -p build
	(cd build && ../configure -q && make -j"$(nproc)" >/dev/null)
fi
export PATH="$top/build:$PATH"
work=${IMGCHAIN_DEMO_DIR:-$top/demo-out}
mnt="$work/mnt"
mountpoint -q "$mnt" 2>/dev/null && fusermount3 -u "$mnt"
rm -rf "$work"
mkdir -p "$work"
work=$(cd "$work" && pwd)
cleanup() {
	mountpoint -q "$mnt" 2>/dev/null && fusermount3 -u "$mnt" || true
}
trap cleanup EXIT
export IMGCHAIN_PASSPHRASE="demo passphrase"
source tests/lib/mkdisk.sh

step() { printf '\n==> %s\n' "$*"; }

step "making a 128 MiB sample disk (MBR: FAT32 + ext4 with real files)"
mkdisk_create "$work/disk.raw" 128
cp --sparse=always "$work/disk.raw" "$work/disk-mon.raw"

step "imgbackup --name mon: the first backup creates the chain (full image)"
imgbackup --name mon "$work/chain" "$work/disk.raw"

step "a day of server activity changes about 1% of the disk"
mkdisk_mutate "$work/disk.raw" 1
cp --sparse=always "$work/disk.raw" "$work/disk-tue.raw"

step "imgbackup --name tue: incremental, only changed blocks are stored"
imgbackup --name tue "$work/chain" "$work/disk.raw"

step "imginfo: the chain as a tree"
imginfo "$work/chain"

step "imgverify (keyless) and imgverify --data (with the key)"
imgverify "$work/chain"
imgverify --data "$work/chain"

for p in mon tue; do
	step "imgrestore $p and compare with the disk as it was"
	imgrestore "$work/chain" "$p" "$work/restored-$p.raw"
	cmp "$work/restored-$p.raw" "$work/disk-$p.raw"
	echo "restored $p is byte-identical to the source"
done

if [ -x "$top/build/imgmount" ] && [ -e /dev/fuse ]; then
	step "imgmount: every restore point as disk files, checked with qemu-img"
	mkdir -p "$mnt"
	imgmount "$work/chain" "$mnt"
	ls -l "$mnt" "$mnt/tue"
	qemu-img compare -f raw -F vmdk "$work/disk-tue.raw" "$mnt/tue/disk.vmdk"
	qemu-img check -f vmdk "$mnt/tue/disk-sparse.vmdk"
	fusermount3 -u "$mnt"
fi
step "demo complete"
cat <<EOT
The tools are in $top/build (make -C build install puts them and their man pages in
/usr/local). What the demo made is kept in $work:
  chain/             the chain: two restore points, mon (full) and tue (incremental)
  disk-mon.raw, disk-tue.raw   the sample disk as it was at each backup
Look at it yourself (the passphrase is "demo passphrase"):
  export PATH=$top/build:\$PATH IMGCHAIN_PASSPHRASE='demo passphrase'
  imginfo $work/chain
  mkdir -p $mnt && imgmount $work/chain $mnt && ls -l $mnt/tue
  fusermount3 -u $mnt
EOT
