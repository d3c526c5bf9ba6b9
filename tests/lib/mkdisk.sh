#!/bin/bash
# mkdisk.sh: build, mutate and compare realistic partitioned test disks without mounting anything.
#
# Source it for the functions, or run it:
#   bash tests/lib/mkdisk.sh OUT [SIZE_MIB]            create a disk (default 64 MiB, minimum 56)
#   bash tests/lib/mkdisk.sh --mutate DISK STEP        one seeded round of "server activity"
#   bash tests/lib/mkdisk.sh --changed-ranges OLD NEW [BLOCK]
#   bash tests/lib/mkdisk.sh --layout DISK
#   bash tests/lib/mkdisk.sh --fsck DISK
#
# Functions (each runs in its own bash process under `set -euo pipefail`, so it fails cleanly
# even when called from an `if` or with `||`, where bash would otherwise ignore set -e):
#   mkdisk_create OUT [SIZE_MIB]
#       MBR disk: p1 FAT32 (type 0c, "IMGCHAIN") with docs, binaries, random and text files;
#       p2 ext4 (type 83, "imgchain-data") built with `mkfs.ext4 -d` from a deterministic sample of
#       real files under /usr plus generated random, compressible, zero-filled and sparse files;
#       then unpartitioned zeros to the end. The image file itself is sparse.
#   mkdisk_mutate DISK STEP
#       Changes about 1% of the 64 KiB blocks, deterministically for a given STEP and starting
#       disk: in ext4 (debugfs -w) writes new files, replaces one, deletes one, rotates away what
#       step STEP-4 wrote, and rewrites 4 KiB pages of /var/lib/app/db.bin in place; one 64 KiB
#       block of db.bin becomes all zeros; in FAT (mtools) adds, replaces and deletes files;
#       random bytes go into the first half of the unpartitioned tail (so the tail is zero only
#       on a fresh disk). Ends with fsck of both file systems and fails if either is not clean.
#       About 1% of a 2 GiB disk; 2-3% of a 64 MiB one, where metadata blocks are a floor.
#   mkdisk_changed_ranges OLD NEW [BLOCK]
#       Prints "OFFSET LENGTH" (bytes, decimal) for each maximal run of BLOCK-aligned blocks
#       (default 65536) that differ, like a dirty bitmap would. A shorter file reads as zeros past
#       its end. The last run is clipped to the larger file's size.
#   mkdisk_layout DISK
#       Prints "N START_BYTES SIZE_BYTES TYPE" per MBR partition (TYPE as sfdisk prints it, e.g. c,
#       83), then "tail START_BYTES SIZE_BYTES" for the space after the last partition.
#   mkdisk_fsck DISK
#       e2fsck -fn on the ext4 partition and fsck.fat -n on the FAT one; non-zero if not clean.
#
# Content depends on what this machine has under /usr, so disks from two machines differ. Two
# creations on one machine hold the same files in the same places but differ in a few inode and
# directory times (mke2fs copies the source files' atime and ctime); a mutation applied to the
# same disk is byte-for-byte reproducible. Tests that need two identical disks copy one.

MKDISK_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/mkdisk.sh

mkdisk_create()         { bash "$MKDISK_LIB" --create "$@"; }
mkdisk_mutate()         { bash "$MKDISK_LIB" --mutate "$@"; }
mkdisk_changed_ranges() { bash "$MKDISK_LIB" --changed-ranges "$@"; }
mkdisk_layout()         { bash "$MKDISK_LIB" --layout "$@"; }
mkdisk_fsck()           { bash "$MKDISK_LIB" --fsck "$@"; }

# Everything below runs only in the child process.

# Fixed identities and clock, so that disks differ as little as the tools allow.
_MKDISK_EPOCH=1700000000
_MKDISK_UUID=1c0ffee1-0000-4000-8000-000000000001
_MKDISK_FATID=1C0FFEE1

_mkdisk_die() { echo "mkdisk: $*" >&2; exit 1; }

# A scratch directory in DIR (default $TMPDIR), removed when the child process exits.
# Sets _MKDISK_WORK.
_MKDISK_WORK=
_mkdisk_workdir() {
	_MKDISK_WORK=$(mktemp -d "${1:-${TMPDIR:-/tmp}}/.mkdisk.XXXXXX")
	trap 'rm -rf "$_MKDISK_WORK"' EXIT
}

_mkdisk_need() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 || _mkdisk_die "missing tool: $t (see scripts/deps.txt)"
	done
}

# Partition table of DISK as "N START SIZE TYPE" plus the tail, all in bytes.
_mkdisk_layout() {
	local disk=$1 size
	[[ -f $disk ]] || _mkdisk_die "no such disk: $disk"
	size=$(stat -c %s "$disk")
	sfdisk -d "$disk" 2>/dev/null | awk -v disk_size="$size" '
		/^label:/ { if ($2 != "dos") { print "mkdisk: not an MBR disk" > "/dev/stderr"; exit 1 } }
		/start=/ {
			n++; start = size = type = ""
			for (i = 1; i <= NF; i++) {
				if ($i == "start=") start = $(i + 1); else if ($i ~ /^start=/) { split($i, a, "="); start = a[2] }
				if ($i == "size=") size = $(i + 1); else if ($i ~ /^size=/) { split($i, a, "="); size = a[2] }
				if ($i == "type=") type = $(i + 1); else if ($i ~ /^type=/) { split($i, a, "="); type = a[2] }
			}
			gsub(/,/, "", start); gsub(/,/, "", size); gsub(/,/, "", type)
			# %.0f, not %d: mawk clamps %d to 2^31 - 1 (2 GiB), which put the "tail"
			# writes of a mutation inside the ext4 of a disk over 2 GiB
			printf "%d %.0f %.0f %s\n", n, start * 512, size * 512, type
			if ((start + size) * 512 > end) end = (start + size) * 512
		}
		END { if (n == 0) exit 1; printf "tail %.0f %.0f\n", end, disk_size - end }'
}

# Prints "OFFSET SIZE" of the first partition of the given sfdisk type (c for FAT32, 83 for ext4).
_mkdisk_part() {
	local disk=$1 type=$2 line
	line=$(_mkdisk_layout "$disk" | awk -v t="$type" '$4 == t { print $2, $3; exit }')
	[[ -n $line ]] || _mkdisk_die "$disk has no partition of type $type"
	echo "$line"
}

_mkdisk_create() {
	local out size_mib=${2:-64}
	out=$(realpath -m -- "$1")
	[[ $size_mib =~ ^[0-9]+$ ]] || _mkdisk_die "SIZE_MIB must be a number of MiB: $size_mib"
	((size_mib >= 56)) || _mkdisk_die "SIZE_MIB must be at least 56 (FAT32 needs 34 MiB)"
	_mkdisk_need sfdisk mkfs.ext4 mkfs.fat mcopy python3 truncate

	# MiB layout: 1 MiB for the MBR gap, FAT32 (mtools needs >= 65525 clusters: 34 MiB at 512 B
	# per cluster), ext4 takes the rest but for a zero tail of 1/32 of the disk.
	local tail_mib=$((size_mib / 32 > 2 ? size_mib / 32 : 2))
	local fat_mib=$((size_mib / 16 > 34 ? size_mib / 16 : 34))
	local ext_mib=$((size_mib - 1 - fat_mib - tail_mib))
	local fat_start=$((1 * 2048)) ext_start=$(((1 + fat_mib) * 2048))

	# Staged beside OUT so that files from /usr can be hard links rather than copies.
	_mkdisk_workdir "$(dirname "$out")"
	local work=$_MKDISK_WORK

	rm -f "$out"
	truncate -s "${size_mib}M" "$out"
	sfdisk --no-reread --no-tell-kernel -q "$out" >/dev/null <<-EOF
		label: dos
		label-id: 0x1c0ffee1
		unit: sectors
		start=$fat_start, size=$((fat_mib * 2048)), type=c
		start=$ext_start, size=$((ext_mib * 2048)), type=83
	EOF

	_mkdisk_py stage "$work" "$ext_mib" "$fat_mib"

	# lazy init and nodiscard: the file is freshly truncated, so it already reads as zeros and
	# stays sparse where nothing is written.
	mkfs.ext4 -q -F -T default -b 4096 -I 256 -L imgchain-data -U "$_MKDISK_UUID" \
		-E "offset=$((ext_start * 512)),root_owner=0:0,nodiscard,lazy_itable_init=1,lazy_journal_init=1,hash_seed=$_MKDISK_UUID" \
		-d "$work/ext" "$out" "${ext_mib}M" \
		|| _mkdisk_die "mkfs.ext4 -d failed"

	# mtools rejects FAT32 with fewer than 65525 clusters, so take the largest cluster that
	# keeps a margin above it. mkfs.fat warns that the file is larger than the partition: that is
	# the point of --offset.
	local spc=1 log
	while ((spc < 64 && fat_mib * 2048 / (spc * 2) >= 70000)); do spc=$((spc * 2)); done
	log=$(mkfs.fat -F 32 -s "$spc" -n IMGCHAIN -i "$_MKDISK_FATID" -h "$fat_start" --offset="$fat_start" \
		"$out" $((fat_mib * 1024)) 2>&1) || _mkdisk_die "mkfs.fat failed: $log"
	(cd "$work/fat" && mcopy -s -m -Q -D o -i "$out@@$((fat_start * 512))" -- * ::/) \
		|| _mkdisk_die "mcopy into the FAT partition failed"
}

_mkdisk_fsck() {
	local disk=$1 off size part
	_mkdisk_need e2fsck fsck.fat
	# Assignments rather than `read < <(...)`, so that a failure stops here under set -e.
	part=$(_mkdisk_part "$disk" 83)
	read -r off size <<<"$part"
	e2fsck -fn "$disk?offset=$off" >/dev/null 2>&1 || {
		e2fsck -fn "$disk?offset=$off" >&2 || true
		_mkdisk_die "ext4 partition of $disk is not clean"
	}
	# fsck.fat takes no offset: check a sparse copy of the partition.
	part=$(_mkdisk_part "$disk" c)
	read -r off size <<<"$part"
	[[ -n $_MKDISK_WORK ]] || _mkdisk_workdir
	dd if="$disk" of="$_MKDISK_WORK/fat.img" bs=1M iflag=skip_bytes,count_bytes skip="$off" \
		count="$size" conv=sparse status=none
	fsck.fat -n "$_MKDISK_WORK/fat.img" >/dev/null 2>&1 || {
		fsck.fat -n "$_MKDISK_WORK/fat.img" >&2 || true
		_mkdisk_die "FAT partition of $disk is not clean"
	}
}

_mkdisk_mutate() {
	local disk=$1 step=$2
	[[ $step =~ ^[0-9]+$ ]] || _mkdisk_die "STEP must be a non-negative integer: $step"
	_mkdisk_need debugfs mcopy mdel python3
	local ext fat layout ext_off fat_off tail_off tail_size
	ext=$(_mkdisk_part "$disk" 83)
	fat=$(_mkdisk_part "$disk" c)
	layout=$(_mkdisk_layout "$disk")
	ext_off=${ext%% *}
	fat_off=${fat%% *}
	read -r _ tail_off tail_size < <(grep '^tail ' <<<"$layout")
	_mkdisk_workdir
	_mkdisk_py mutate "$_MKDISK_WORK" "$disk" "$step" "$ext_off" "$fat_off" "$tail_off" "$tail_size"
	_mkdisk_fsck "$disk"
}

# The Python half: staging trees for creation, the mutation plan, and the range comparison.
_mkdisk_py() {
	# Debian's interpreter first: a version manager's shim on PATH costs a second per call.
	local py=python3
	[[ -x /usr/bin/python3 ]] && py=/usr/bin/python3
	"$py" - "$@" <<'PY'
import hashlib, os, random, shutil, subprocess, sys, zlib

EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "1700000000"))
MIB = 1 << 20
WORDS = ("alpha beta gamma delta request served cache miss hit backend upstream timeout "
         "user session login logout GET POST /api/v1/items /index.html 200 304 404 500 "
         "worker queue flush commit checkpoint vacuum replica lag ok warn error").split()


def die(msg):
    sys.stderr.write("mkdisk: %s\n" % msg)
    sys.exit(1)


def text_bytes(rng, size, tag):
    """Log-like text: compresses well, yet no two lines or blocks repeat (timestamps and
    sequence numbers run on), so it does not deduplicate."""
    msgs = [" ".join(rng.choices(WORDS, k=rng.randint(4, 12))) for _ in range(256)]
    t0, out, n, seq = rng.randrange(10**6), [], 0, 0
    while n < size:
        batch = ["2024-05-%02d %02d:%02d:%02d %s[%d]: #%d %s\n" % (
            1 + t // 86400 % 28, t // 3600 % 24, t // 60 % 60, t % 60, tag, 100 + t % 900,
            seq + i, m) for i, (t, m) in enumerate(
                zip(range(t0 + seq, t0 + seq + 4096), rng.choices(msgs, k=4096)))]
        chunk = "".join(batch)
        out.append(chunk)
        n, seq = n + len(chunk), seq + 4096
    return "".join(out).encode()[:size]


def rand_bytes(rng, size):
    """Seeded incompressible bytes; SHAKE-128 is about twice as fast as Random.randbytes."""
    return hashlib.shake_128(rng.getrandbits(128).to_bytes(16, "little")).digest(size)


def write_file(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    os.utime(path, (EPOCH, EPOCH))


def walk_files(root):
    """Regular files under root in sorted order, without following symlinks or mounts."""
    try:
        dev = os.stat(root).st_dev
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                if e.stat(follow_symlinks=False).st_dev == dev:
                    yield from walk_files(e.path)
            elif e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                if st.st_size > 0 and os.access(e.path, os.R_OK):
                    yield e.path, st.st_size
        except OSError:
            continue


def sample_real(root, budget, max_file, salt):
    """A deterministic, evenly spread sample of files under root adding up to about budget.
    Files are kept when a hash of their path falls under a rate fitted to the tree's size, so the
    sample covers the whole tree rather than its alphabetical start."""
    files = [(p, s) for p, s in walk_files(root) if s <= max_file]
    total = sum(s for _, s in files)
    if total == 0 or budget <= 0:
        return []
    rate = min(1.0, 1.25 * budget / total)
    picked, used = [], 0
    for p, s in files:
        if zlib.crc32((salt + p).encode()) / 2**32 >= rate or used + s > budget:
            continue
        picked.append((p, s))
        used += s
    return picked


def link_or_copy(src, dst):
    """Hard link when on the same file system, else copy; a file that vanished is skipped."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        try:
            shutil.copy2(src, dst)
            st = os.stat(src)
            os.chown(dst, st.st_uid, st.st_gid)
        except OSError:
            if os.path.lexists(dst):
                os.unlink(dst)


def fat_name(name, used):
    """A lower-case name FAT keeps as is, unique without regard to case."""
    base = "".join(c if c.isalnum() or c in "._-" else "_" for c in name.lower()).strip(".") or "f"
    cand, i = base, 1
    while cand in used:
        cand, i = "%s_%d" % (base, i), i + 1
    used.add(cand)
    return cand


def stage(work, ext_mib, fat_mib):
    ext_mib, fat_mib = int(ext_mib), int(fat_mib)
    rng = random.Random("imgchain-mkdisk-%d-%d" % (ext_mib, fat_mib))
    ext, fat = os.path.join(work, "ext"), os.path.join(work, "fat")

    # ext4: 40% of what the journal leaves goes to real files from /usr, 17% to generated
    # ones, the rest stays free for mutations. Journal sizes as mke2fs picks them.
    blocks = ext_mib * 256
    journal = 4 if blocks < 256 * 1024 else 16 if blocks < 512 * 1024 else 32 \
        if blocks < 1024 * 1024 else 64 if blocks < 4096 * 1024 else 256
    usable = (ext_mib - journal) * MIB
    real = usable * 40 // 100
    max_file = min(64 * MIB, max(real // 6, MIB))
    for root, share in (("/usr/bin", 30), ("/usr/sbin", 5), ("/usr/lib", 40), ("/usr/share", 25)):
        for p, _ in sample_real(root, real * share // 100, max_file, "ext"):
            link_or_copy(p, ext + p)
    db = max(2 * MIB, usable * 3 // 100 // MIB * MIB)
    write_file(ext + "/var/lib/app/db.bin", rand_bytes(rng, db), 0o600)
    write_file(ext + "/home/user/archive.tar.zst", rand_bytes(rng, usable // 20))
    logs = usable // 20
    for i in range(4):
        write_file(ext + "/var/log/app/app.log.%d" % i, text_bytes(rng, logs // 4, "app"))
    # Small files that mutations replace and delete: a mix of random and compressible.
    small, n = usable * 3 // 100, 0
    while small > 0:
        size = rng.randint(1, 16) * 4096 - rng.randint(0, 4095)
        data = rand_bytes(rng, size) if n % 2 else text_bytes(rng, size, "srv")
        write_file(ext + "/srv/files/file-%04d.dat" % n, data)
        small, n = small - size, n + 1
    # All-zero (non-sparse in the source; mkfs may store it as holes) and really sparse files.
    write_file(ext + "/var/lib/app/zeros.bin", bytes(MIB))
    sparse = ext + "/home/user/vm-sparse.img"
    write_file(sparse, b"")
    with open(sparse, "r+b") as f:
        f.truncate(usable // 10)
        for at in (0, usable // 20):
            f.seek(at)
            f.write(rand_bytes(rng, max(64 * 1024, usable // 200)))
    os.utime(sparse, (EPOCH, EPOCH))
    write_file(ext + "/etc/app/app.conf", b"# imgchain test disk\nworkers = 4\ncache = 64M\n")
    os.symlink("../../var/log/app/app.log.0", ext + "/home/user/latest.log")
    for d in ("var/lib/app", "var/log/app", "srv/files", "home/user", "etc/app", "var/lib",
              "var/log", "srv", "home", "etc", "var"):
        os.utime(os.path.join(ext, d), (EPOCH, EPOCH), follow_symlinks=False)

    # FAT32: docs and binaries copied from /usr, random data and text logs: about 40% full.
    used = set()
    budget = fat_mib * MIB
    for p, _ in sample_real("/usr/share/doc", budget // 10, MIB, "fatdoc"):
        if os.path.basename(p) in ("copyright", "changelog.Debian.gz", "README"):
            pkg = fat_name(os.path.basename(os.path.dirname(p)), used)
            link_or_copy(p, "%s/docs/%s/%s" % (fat, pkg, fat_name(os.path.basename(p), set())))
    os.makedirs(fat + "/bin")
    for p, _ in sample_real("/usr/bin", budget * 15 // 100, max(MIB, budget // 10), "fatbin"):
        try:
            shutil.copyfile(p, "%s/bin/%s" % (fat, fat_name(os.path.basename(p), used)))
        except OSError:
            pass
    write_file(fat + "/data/random.bin", rand_bytes(rng, budget * 8 // 100))
    for i in range(3):
        write_file(fat + "/logs/boot-%d.txt" % i, text_bytes(rng, budget * 7 // 300, "boot"))
    write_file(fat + "/config/app.ini", b"[app]\nname=imgchain-test\nversion=1\n")
    write_file(fat + "/readme.txt", b"imgchain test disk: FAT32 partition\r\n")
    # mcopy -m keeps these times, so the FAT bytes do not depend on when the disk was made.
    for dirpath, dirs, files in os.walk(fat, topdown=False):
        for name in files + dirs:
            os.utime(os.path.join(dirpath, name), (EPOCH, EPOCH))


# ---------------------------------------------------------------------------------------------
# Mutation


def run(cmd, what, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if r.returncode != 0:
        die("%s failed (%s): %s" % (what, " ".join(cmd), r.stderr.strip()))
    return r.stdout


def debugfs(dev, cmds, write=False):
    """Runs debugfs commands; any error message from them fails the mutation, since debugfs
    itself exits 0 whatever happened."""
    r = subprocess.run(["debugfs"] + (["-w"] if write else []) + ["-f", "-", dev],
                       input="\n".join(cmds) + "\n", stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    errs = [l for l in r.stderr.splitlines() if l.strip() and not l.startswith("debugfs ")]
    if r.returncode != 0 or errs:
        die("debugfs on %s: %s" % (dev, "; ".join(errs) or "exit %d" % r.returncode))
    return r.stdout


def debugfs_query(dev, cmd):
    """One read-only debugfs command; -R keeps the command echo out of the output."""
    return run(["debugfs", "-R", cmd, dev], "debugfs")


def ext_ls(dev, path):
    out = debugfs_query(dev, "ls -p " + path)
    names = []
    for line in out.splitlines():
        f = line.split("/")
        if len(f) >= 7 and f[0] == "" and f[5] not in (".", ".."):
            names.append(f[5])
    return sorted(names)


def fat_ls(img, path):
    """Files below path, recursively, as mtools names ("::/dir/file"); none if path is absent."""
    out = subprocess.run(["mdir", "-b", "-/", "-i", img, "::" + path], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True).stdout
    return sorted(l for l in out.splitlines() if l.startswith("::/") and not l.endswith("/"))


def mutate(work, disk, step, ext_off, fat_off, tail_off, tail_size):
    step, ext_off, fat_off = int(step), int(ext_off), int(fat_off)
    tail_off, tail_size = int(tail_off), int(tail_size)
    rng = random.Random("imgchain-mutate-%d" % step)
    dev = "%s?offset=%d" % (disk, ext_off)
    fat = "%s@@%d" % (disk, fat_off)
    disk_size = os.path.getsize(disk)
    if tail_off < ext_off or tail_off + tail_size != disk_size:
        die("%s: bad layout (tail at %d, %d bytes, of a %d-byte disk)" % (disk, tail_off, tail_size,
                                                                        disk_size))
    # Block budget: about 1% of the 64 KiB blocks, split between the kinds of change below.
    budget = max(8, disk_size // 65536 // 100) * 65536

    # ext4 through debugfs: a new log, a new random file, one file replaced, one deleted while
    # more than 8 are left, and what step STEP-4 added is rotated away so that the disk does not
    # fill up over many steps.
    old = step - 4
    files = ext_ls(dev, "/srv/files")
    rotated = "new-%d.dat" % old
    files = [f for f in files if f != rotated]
    if not files:
        die("/srv/files in the ext4 partition is empty")
    replaced = rng.choice(files)
    files.remove(replaced)
    cmds = []
    if len(files) > 8:
        cmds.append("rm /srv/files/" + rng.choice(files))
    if rotated in ext_ls(dev, "/srv/files"):
        cmds.append("rm /srv/files/" + rotated)
    if "step-%d.log" % old in ext_ls(dev, "/var/log/app"):
        cmds.append("rm /var/log/app/step-%d.log" % old)
    src = os.path.join(work, "src")
    os.makedirs(src)
    write_file(src + "/log", text_bytes(rng, budget * 15 // 100, "step%d" % step))
    write_file(src + "/new", rand_bytes(rng, budget * 15 // 100))
    write_file(src + "/repl", rand_bytes(rng, rng.randint(1, 16) * 4096))
    debugfs(dev, cmds + [
        "cd /var/log/app", "write %s/log step-%d.log" % (src, step),
        "cd /srv/files", "write %s/new new-%d.dat" % (src, step),
        "rm /srv/files/" + replaced, "write %s/repl %s" % (src, replaced),
    ], write=True)

    # FAT through mtools: a new file, config rewritten, one file deleted.
    write_file(src + "/fatnew", rand_bytes(rng, budget * 10 // 100))
    write_file(src + "/ini", b"[app]\nname=imgchain-test\nversion=%d\n" % (step + 1))
    run(["mcopy", "-o", "-m", "-i", fat, src + "/fatnew", "::/data/step-%d.bin" % step], "mcopy")
    run(["mcopy", "-o", "-m", "-i", fat, src + "/ini", "::/config/app.ini"], "mcopy")
    gone = fat_ls(fat, "/docs") + fat_ls(fat, "/bin")
    if gone:
        run(["mdel", "-i", fat, rng.choice(gone)], "mdel")
    if "::/data/step-%d.bin" % old in fat_ls(fat, "/data"):
        run(["mdel", "-i", fat, "::/data/step-%d.bin" % old], "mdel")

    # In place, below the file systems: the "database" rewrites scattered 4 KiB pages, trims
    # one 64 KiB block to zeros, and something writes random bytes into the unpartitioned tail.
    blocks = [int(b) for b in debugfs_query(dev, "blocks /var/lib/app/db.bin").split()]
    if not blocks:
        die("cannot map /var/lib/app/db.bin")
    fd = os.open(disk, os.O_RDWR)
    try:
        for _ in range(max(1, budget * 30 // 100 // 65536)):
            os.pwrite(fd, rand_bytes(rng, 4096), ext_off + rng.choice(blocks) * 4096)
        owned = set(blocks)
        cands = []
        for b in blocks:
            at = ext_off + b * 4096
            if at % 65536 == 0 and all(b + i in owned for i in range(16)):
                if os.pread(fd, 65536, at) != bytes(65536):
                    cands.append(at)
        if not cands:
            die("db.bin has no non-zero 64 KiB-aligned block left to zero")
        os.pwrite(fd, bytes(65536), rng.choice(cands))
        if tail_size >= 2 * 65536:
            n = max(512, budget * 5 // 100 // 512 * 512)
            span = max(512, (tail_size // 2 - n) // 512 * 512)
            os.pwrite(fd, rand_bytes(rng, n), tail_off + rng.randrange(0, span, 512))
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Comparison


def next_data(fd, off, size):
    """Start of the next data at or after off (size if none): holes read as zeros."""
    try:
        return os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        return size


def changed_ranges(old, new, block="65536"):
    block = int(block)
    if block <= 0:
        die("BLOCK must be positive")
    chunk = max(block, (4 * MIB // block) * block)
    fa, fb = os.open(old, os.O_RDONLY), os.open(new, os.O_RDONLY)
    size = max(os.fstat(fa).st_size, os.fstat(fb).st_size)
    # Buffers are reused (readinto) since allocating per chunk costs more than reading.
    ba, bb = bytearray(chunk), bytearray(chunk)
    ma, mb = memoryview(ba), memoryview(bb)
    out, cur = [], [None, None]  # the run being extended: [start, end)

    def mark(start):
        if cur[1] == start:
            cur[1] += block
            return
        if cur[0] is not None:
            out.append("%d %d\n" % (cur[0], min(cur[1], size) - cur[0]))
        cur[0], cur[1] = start, start + block

    off = 0
    while off < size:
        # Skip what is a hole in both files, keeping block alignment.
        skip = min(next_data(fa, off, size), next_data(fb, off, size)) // block * block
        if skip > off:
            off = skip
            continue
        n = min(chunk, size - off)
        for fd, buf, mv in ((fa, ba, ma), (fb, bb, mb)):
            got = os.preadv(fd, [mv[:n]], off)
            if got < chunk:
                buf[got:] = bytes(chunk - got)
        # bytearray == is a memcmp; memoryview == compares item by item, 40 times slower.
        if ba != bb:
            for i in range(0, n, block):
                if ba[i:i + block] != bb[i:i + block]:
                    mark(off + i)
        off += n
        if len(out) > 4096:
            sys.stdout.write("".join(out))
            out.clear()
    if cur[0] is not None:
        out.append("%d %d\n" % (cur[0], min(cur[1], size) - cur[0]))
    sys.stdout.write("".join(out))


cmd, args = sys.argv[1], sys.argv[2:]
{"stage": stage, "mutate": mutate, "ranges": changed_ranges}[cmd](*args)
PY
}

_mkdisk_main() {
	set -euo pipefail
	shopt -s inherit_errexit
	export E2FSPROGS_FAKE_TIME=$_MKDISK_EPOCH SOURCE_DATE_EPOCH=$_MKDISK_EPOCH
	export MTOOLS_SKIP_CHECK=1 MTOOLSRC=/dev/null LC_ALL=C TZ=UTC
	local cmd=${1:-}
	case $cmd in
	--create) shift; (($# >= 1)) || _mkdisk_die "usage: --create OUT [SIZE_MIB]"; _mkdisk_create "$@" ;;
	--mutate) shift; (($# == 2)) || _mkdisk_die "usage: --mutate DISK STEP"; _mkdisk_mutate "$@" ;;
	--changed-ranges)
		shift
		(($# == 2 || $# == 3)) || _mkdisk_die "usage: --changed-ranges OLD NEW [BLOCK]"
		_mkdisk_py ranges "$@"
		;;
	--layout) shift; (($# == 1)) || _mkdisk_die "usage: --layout DISK"; _mkdisk_layout "$1" ;;
	--fsck) shift; (($# == 1)) || _mkdisk_die "usage: --fsck DISK"; _mkdisk_fsck "$1" ;;
	-h | --help | "") sed -n '2,/^$/p' "$MKDISK_LIB" | sed 's/^# \{0,1\}//'; [[ -n $cmd ]] ;;
	-*) _mkdisk_die "unknown option: $cmd" ;;
	*) _mkdisk_create "$@" ;;
	esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	_mkdisk_main "$@"
fi
