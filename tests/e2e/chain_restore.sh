#!/bin/bash
# chain_restore.sh: end to end on a real disk (MBR, FAT32 and ext4 with files, made by
# tests/lib/mkdisk.sh): a full backup, three incrementals (one from a change tracker's list of
# changed ranges) and a branch; every point restores byte-for-byte to the disk as it was at its
# backup, the restored file systems are clean, and the chain verifies keyless and with the key.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imginfo imgverify cmp
requires sfdisk mkfs.ext4 mkfs.fat mcopy mdel debugfs e2fsck fsck.fat
source "$top_srcdir/tests/lib/mkdisk.sh"

mkdisk_create disk 64
cp --sparse=always disk s.full
expect_exit 0 imgbackup --name full C disk
expect_out "^full point 'full' \(seq 1\)"

mkdisk_mutate disk 1
cp --sparse=always disk s.mon
expect_exit 0 imgbackup --name mon C disk
expect_out "based on 'full'"

# tue: only the ranges a change tracker reports are read
mkdisk_mutate disk 2
cp --sparse=always disk s.tue
mkdisk_changed_ranges s.mon s.tue >tue.ranges
[[ -s tue.ranges ]] || fail "mutation 2 changed nothing"
expect_exit 0 imgbackup --name tue --changed-blocks tue.ranges C disk
read_tue=$(summary_bytes read)
disk_size=$(stat -c %s disk)
((read_tue < disk_size / 4)) || fail "--changed-blocks read $read_tue of $disk_size bytes"

mkdisk_mutate disk 3
cp --sparse=always disk s.wed
expect_exit 0 imgbackup --name wed C disk

# a branch: monday's disk, changed another way
cp --sparse=always s.mon other
mkdisk_mutate other 7
cp --sparse=always other s.test
expect_exit 0 imgbackup --name test --parent mon C other
expect_out "based on 'mon'"

imginfo --json C >info.json
json_check info.json <<'EOF'
got = [(p["name"], p["kind"], p["parent"]) for p in j["points"]]
assert got == [("full", "full", None), ("mon", "incremental", "full"),
               ("tue", "incremental", "mon"), ("wed", "incremental", "tue"),
               ("test", "incremental", "mon")], got
full = j["points"][0]
# about 1% of the blocks change per step: an incremental stores far less than the full
for p in j["points"][1:]:
    assert p["stored_bytes"] < full["stored_bytes"] / 4, p
EOF

expect_exit 0 imgverify C
expect_out "checked: no problems"
expect_exit 0 imgverify --data C
expect_out "^C: 5 points, 5 images, [0-9]+ records .* authenticated: no problems$"

for p in full mon tue wed test; do
	expect_exit 0 imgrestore C $p r.$p
	cmp r.$p s.$p || fail "restore of '$p' differs from the disk at its backup"
done
# the restored disks are usable: both file systems check clean
mkdisk_fsck r.wed || fail "file systems of the restored 'wed' are not clean"
mkdisk_fsck r.test || fail "file systems of the restored 'test' are not clean"
