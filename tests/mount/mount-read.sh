#!/bin/bash
# mount-read.sh: a read-only mount of full + incrementals + a branch shows every point's
# disk byte for byte (disk.raw, disk-flat.vmdk); qemu-img accepts disk.vmdk and
# disk-sparse.vmdk (info, check, compare) and maps holes exactly where the disk's 64 KiB
# blocks are zero; writes fail with EROFS; a remount shows identical bytes; a new backup
# appears without remounting.
. "$(dirname "$0")/mount-lib.sh"
requires qemu-img

make_disk_chain 64
mount_chain "$CHAIN"

[[ $(readlink "$MNT/latest") == branch ]] || fail "latest -> $(readlink "$MNT/latest")"
ls "$MNT" | sort | tr '\n' ' ' | grep -qx "branch latest mon tue wed " || fail "root lists: $(ls "$MNT")"
ls "$MNT/tue" | sort | tr '\n' ' ' |
	grep -qx "disk-flat.vmdk disk-sparse.vmdk disk.raw disk.vhd disk.vhdx disk.vmdk info.json " || fail "point lists: $(ls "$MNT/tue")"
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["name"]=="tue" and j["parent"]=="mon" and j["kind"]=="incremental", j' \
	"$MNT/tue/info.json" || fail "info.json"

for pd in $POINTS; do
	p=${pd%%:*} d=$WORK/${pd#*:}
	cmp "$MNT/$p/disk.raw" "$d" || fail "$p: disk.raw differs from its source"
	cmp "$MNT/$p/disk-flat.vmdk" "$d" || fail "$p: disk-flat.vmdk differs from its source"
	for f in disk.vmdk disk-sparse.vmdk; do
		qemu-img info --output=json "$MNT/$p/$f" >"$WORK/info.json" || fail "$p/$f: qemu-img info"
		grep -q '"format": "vmdk"' "$WORK/info.json" || fail "$p/$f: not probed as vmdk"
		qemu-img check -f vmdk "$MNT/$p/$f" >/dev/null || fail "$p/$f: qemu-img check exit $?"
		qemu-img compare -f raw -F vmdk "$d" "$MNT/$p/$f" >/dev/null || fail "$p/$f: qemu-img compare exit $?"
	done
	# holes of the sparse VMDK == the zero 64 KiB blocks of the source
	qemu-img map -f vmdk --output=json "$MNT/$p/disk-sparse.vmdk" >"$WORK/map.json"
	python3 - "$WORK/map.json" "$d" <<'PY' || fail "$p: qemu-img map holes do not match the zero blocks"
import json, sys
B = 65536
holes = set()
for r in json.load(open(sys.argv[1])):
    if not r["data"]:
        assert r["start"] % B == 0 and (r["length"] % B == 0 or r["start"] + r["length"] >= 0)
        holes.update(range(r["start"] // B, (r["start"] + r["length"] + B - 1) // B))
zero = set()
with open(sys.argv[2], "rb") as f:
    i = 0
    while True:
        b = f.read(B)
        if not b:
            break
        if not b.strip(b"\0"):
            zero.add(i)
        i += 1
holes = {h for h in holes if h < i}
if holes != zero:
    print("holes not zero:", sorted(holes - zero)[:10], "zero not holes:", sorted(zero - holes)[:10])
    sys.exit(1)
PY
done

# read-only: mount(8) and /proc/mounts say ro; EROFS on writes and on creating files
mopts=$(awk -v m="$MNT" '$2 == m && $3 == "fuse.imgmount" { print $4 }' /proc/mounts)
[[ $mopts == ro,* ]] || fail "a read-only mount is listed with options '$mopts'"
err=$( (echo x >>"$MNT/tue/disk.raw") 2>&1 || true)
[[ $err == *"Read-only file system"* ]] || fail "write to disk.raw: '$err'"
err=$( (touch "$MNT/tue/.lck-1") 2>&1 || true)
[[ $err == *"Read-only file system"* ]] || fail "create in a point: '$err'"
python3 -c 'import os,sys,errno
try:
    os.open(sys.argv[1], os.O_RDWR)
except OSError as e:
    sys.exit(0 if e.errno == errno.EROFS else 1)
sys.exit(1)' "$MNT/wed/disk.vmdk" || fail "O_RDWR open of disk.vmdk was not EROFS"

sha256sum "$MNT"/{mon,tue,wed,branch}/disk.vmdk "$MNT/mon/info.json" >"$WORK/sums"
head -c 2M "$MNT/wed/disk-sparse.vmdk" | sha256sum >"$WORK/sparse.sum"

# a new backup shows up in the mounted tree (the chain directory's mtime changed)
imgbackup -q -n thu "$CHAIN" "$WORK/d2"
sleep 1.1   # the kernel keeps root entries for a second
[[ -d $MNT/thu ]] || fail "new point thu not visible"
[[ $(readlink "$MNT/latest") == thu ]] || fail "latest did not move to thu"
cmp "$MNT/thu/disk.raw" "$WORK/d2" || fail "thu differs"

unmount_chain
mount_chain "$CHAIN"
sha256sum -c --quiet "$WORK/sums" || fail "descriptors or info.json changed across a remount"
[[ $(head -c 2M "$MNT/wed/disk-sparse.vmdk" | sha256sum) == "$(cat "$WORK/sparse.sum")" ]] ||
	fail "sparse VMDK header changed across a remount"
unmount_chain
echo "ok"
