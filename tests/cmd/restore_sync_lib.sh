# restore_sync_lib.sh: sourced by the restore_sync*.sh tests.  Runs imgrestore --sync or
# --sync-from under strace and checks, from outside the tool, what it read and wrote.
#
#   traced_sync BEFORE AFTER MODE IMAGES -- IMGRESTORE_ARGS...
#     BEFORE  a copy of DEST's bytes before the sync (a missing file: DEST is empty)
#     AFTER   the disk the point holds (the source the backup read)
#     MODE    "file" (zero blocks become holes: fallocate), "dev" (zeros are written) or
#             "nbd:LOG" (DEST an NBD URI served by nbdkit --filter=log logfile=LOG: its
#             requests are counted instead of system calls, zero blocks as WRITE_ZEROES)
#     IMAGES  the images of the point's path, root first, comma-separated
#   DEST is the last of IMGRESTORE_ARGS.  Fails unless:
#   - the bytes written to DEST (pwrite64) are exactly the blocks of AFTER that differ from
#     BEFORE and are not zero; each zero block that differs is punched (file) or written
#     with zeros (dev); nothing else is written or punched;
#   - the records read from the chain (pread64 on the images, outside header and index) are
#     exactly those of the differing non-zero blocks, each the point's entry at its
#     position, read once;
#   - with --sync-from, DEST is opened write-only and never read (read, pread64);
#   - the summary's counts (skipped, written, zeroed) are those numbers.
# two_points SIZE "CHANGED..." ZEROED: chain C with p1 (s1: SIZE random bytes, blocks 10..17
# zero) and p2 (s2: s1 with 500 bytes rewritten in each CHANGED block, blocks ZEROED and
# ZEROED+1 zeroed, 10 bytes written in zero block 12); I1, I2 their paths' images.
two_points()
{
	local b
	mkrandom_bytes s1 "$1" one
	zero_at s1 $((10 * 65536)) $((8 * 65536))
	expect_exit 0 imgbackup -q --name p1 C s1
	cp s1 s2
	for b in $2; do write_at s2 $((b * 65536 + 100)) 500 "b$b"; done
	zero_at s2 $(($3 * 65536)) $((2 * 65536))
	write_at s2 $((12 * 65536)) 10 z
	expect_exit 0 imgbackup -q --name p2 C s2
	I1=C/00000001.img I2=C/00000001.img,C/00000002.img
}

traced_sync()
{
	local before=$1 after=$2 mode=$3 images=$4 tr="$TESTDIR/trace"
	shift 5
	rm -f "$tr".*
	[[ $mode != nbd:* ]] || wc -l <"${mode#nbd:}" >"$TESTDIR/nbdlog.skip"
	# LeakSanitizer cannot run under ptrace: in the sanitizer build, no leak check here
	strace -ff -y -s 0 -o "$tr" -e trace=openat,open,read,pread64,pwrite64,fallocate \
		env ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
		imgrestore "$@" >"$TESTDIR/last.out" 2>"$TESTDIR/last.err" ||
		fail "imgrestore $* failed: $(cat "$TESTDIR/last.err")"
	cat "$TESTDIR/last.out"
	icimg_py "$before" "$after" "$mode" "$images" "${!#}" "$tr" "$TESTDIR/last.out" \
		"$*" "$TESTDIR/nbdlog.skip" <<'EOF' || fail "traced_sync: imgrestore $* did not read and write what differs"
import glob, os, re, sys, icimg
before, after, mode, images, dest, tr, out, args, skip = sys.argv[1:10]
sync_from = "--sync-from" in args.split()
nbdlog = mode[4:] if mode.startswith("nbd:") else None
dest = dest if nbdlog else os.path.realpath(dest)
imgs = [icimg.Image(p) for p in images.split(",")]
bs = imgs[-1].header["block_size"]
new = open(after, "rb").read()
old = open(before, "rb").read() if os.path.exists(before) else b""
n = (len(new) + bs - 1) // bs
data, zero = {}, set()
for p in range(n):
    t = new[p * bs:(p + 1) * bs]
    b = old[p * bs:(p + 1) * bs]
    b = (b + bytes(len(t)))[:len(t)]
    if t == b:
        continue
    if t.count(0) == len(t):
        zero.add(p)
    else:
        data[p] = len(t)
# the entry the point resolves at each position (a linear path, root first)
ent = {}
for im in imgs:
    for e in im.entries:
        ent[e["pos"]] = (im, e)
line = re.compile(r'^(\w+)\((-?\d+|AT_FDCWD)<([^>]*)>, (.*)\) += (-?\d+)')
writes, punches, rec_reads, dest_reads, problems = {}, set(), {}, 0, []
for f in glob.glob(tr + ".*"):
    for l in open(f):
        m = line.match(l)
        if not m:
            continue
        call, path, rest, ret = m.group(1), m.group(3), m.group(4), int(m.group(5))
        if call in ("openat", "open"):
            if sync_from and re.search(r'<%s>$' % re.escape(dest), l.strip()) and "O_WRONLY" not in rest:
                problems.append("DEST opened for reading: " + l.strip())
            continue
        if path == dest:
            if call in ("read", "pread64"):
                dest_reads += max(ret, 0)
            elif call == "pwrite64":
                ln, off = map(int, rest.rsplit(", ", 2)[1:])
                if off % bs or ln != ret:
                    problems.append("odd write: " + l.strip())
                writes[off // bs] = writes.get(off // bs, 0) + ln
            elif call == "fallocate":
                off, ln = map(int, rest.rsplit(", ", 2)[1:])
                if "PUNCH_HOLE" not in rest or off % bs:
                    problems.append("odd fallocate: " + l.strip())
                punches.add(off // bs)
            continue
        if call != "pread64" or not path.endswith(".img"):
            continue
        ln, off = map(int, rest.rsplit(", ", 2)[1:])
        im = [i for i in imgs if os.path.realpath(i.path) == path]
        if not im and off == 0:
            continue    # the chain's scan reads every image's header
        if not im:
            problems.append("read of an image not on the path: " + l.strip())
            continue
        im = im[0]
        if off == 0 or off >= im.slot["index_offset"]:
            continue    # header, slots, index
        hit = [e for e in im.entries if e["kind"] != icimg.ZERO and e["offset"] == off]
        if len(hit) != 1 or hit[0]["stored_len"] != ln:
            problems.append("read that is not a record: " + l.strip())
            continue
        p = hit[0]["pos"]
        if p in rec_reads:
            problems.append("record of block %d read twice" % p)
        if ent.get(p, (None, None))[1] is not hit[0]:
            problems.append("block %d: not the point's record read" % p)
        rec_reads[p] = ln
if nbdlog:    # the export's requests, from nbdkit's log filter
    req = re.compile(r' connection=\d+ (Read|Write|Zero) id=\d+ offset=(0x[0-9a-f]+) count=(0x[0-9a-f]+)')
    for l in open(nbdlog).readlines()[int(open(skip).read()):]:
        m = req.search(l)
        if not m:
            continue
        off, ln = int(m.group(2), 16), int(m.group(3), 16)
        if m.group(1) == "Read":
            dest_reads += ln
        elif off % bs:
            problems.append("odd request: " + l.strip())
        elif m.group(1) == "Write":
            writes[off // bs] = writes.get(off // bs, 0) + ln
        else:
            punches.add(off // bs)
    mode = "file"
exp_writes = dict(data)
if mode == "dev":
    for p in zero:
        exp_writes[p] = min(bs, len(new) - p * bs)
if writes != exp_writes:
    problems.append("blocks written %s, expected %s" % (sorted(writes.items()), sorted(exp_writes.items())))
if mode == "file" and punches != zero:
    problems.append("blocks punched %s, expected %s" % (sorted(punches), sorted(zero)))
if mode == "dev" and punches:
    problems.append("holes punched in a device: %s" % sorted(punches))
if set(rec_reads) != set(data):
    problems.append("records read for blocks %s, expected %s" % (sorted(rec_reads), sorted(data)))
if sync_from and dest_reads:
    problems.append("--sync-from read %d bytes of DEST" % dest_reads)
if not sync_from and dest_reads != len(new):
    problems.append("--sync read %d bytes of DEST, not the disk's %d" % (dest_reads, len(new)))
s = open(out).read()
m = re.search(r"(\d+) blocks compared, (\d+) skipped \(equal\), (\d+) written, (\d+) zeroed", s)
if not m or list(map(int, m.groups())) != [n, n - len(data) - len(zero), len(data), len(zero)]:
    problems.append("summary %r, expected %d compared, %d skipped, %d written, %d zeroed" %
                    (s, n, n - len(data) - len(zero), len(data), len(zero)))
for p in problems:
    print("  " + p, file=sys.stderr)
print("  traced: %d blocks written (%d bytes), %d zero blocks, %d record bytes read from the chain, "
      "%d bytes of DEST read" % (len(writes), sum(writes.values()), len(zero), sum(rec_reads.values()),
                                 dest_reads))
sys.exit(1 if problems else 0)
EOF
}
