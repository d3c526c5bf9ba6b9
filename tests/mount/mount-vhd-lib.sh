# mount-vhd-lib.sh: shared setup of the VHD/VHDX mount tests (sourced, never run by itself), on
# top of mount-lib.sh.  Gives $VHDX_PY, a reader of VHDX and VHD files written from the
# specification (independent of src/serve/ic_vhdx.c): `python3 "$VHDX_PY" CMD FILE [ARG]...`
#   check-vhdx FILE SOURCE    every structure and CRC-32C valid, BAT entry b fully present iff
#                             the source's payload block b holds a non-zero byte, else zero (state
#                             2, offset 0: zeros by the specification), payload blocks
#                             one after another from the first free MiB after the BAT, file size
#                             exactly metadata + present blocks
#   check-vhd FILE SOURCE     footer (cookie, checksum, fixed type, current size = source up to a
#                             MiB, CHS of the specification's algorithm), file = size + 512
#   hole FILE                 the disk offset of the first payload block not in the file (state
#                             2, zero, or 0, not present)
#   entry FILE OFFSET         "STATE FILE_OFFSET" of the BAT entry of that disk offset
#   seq FILE                  the current header's sequence number
#   uuid FILE                 the VHD footer's UUID (hex)
#   log-crash FILE OFFSET     make FILE what a crash leaves between a logged BAT update and the
#                             BAT write: the BAT entry of that disk offset back to 2, the log
#                             GUID of the newest log entry set in a new current header (the next
#                             writer must replay the log)
. "$(dirname "${BASH_SOURCE[0]}")/mount-lib.sh"

VHDX_PY=$WORK/vhdx.py
cat >"$VHDX_PY" <<'PY'
import struct, sys

MIB = 1 << 20
T = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    T.append(c)

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = T[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF

def crc_ok(buf):
    buf = bytearray(buf)
    c = struct.unpack_from("<I", buf, 4)[0]
    buf[4:8] = bytes(4)
    return crc32c(buf) == c

BAT_GUID = "6677c22d23f600429d64115e9bfd4a08"
META_GUID = "06a27c8b90479a4bb8fe575f050f886e"
PARAMS = "3767a1ca36fa434db3b633f0aa44e76b"
VSIZE = "2442a52f1bcd7648b2115dbed83bf4b8"
PAGE83 = "ab12cabee6b2234593efc309e000c746"
LOGICAL = "1dbf41816fa90947ba47f233a8faab5f"
PHYSICAL = "c748a3cd5d4471449cc9e9885251c556"

def parse(path):
    f = open(path, "rb")
    def rd(o, n):
        f.seek(o)
        return f.read(n)
    assert rd(0, 8) == b"vhdxfile", "signature"
    heads = []
    for o in (64 << 10, 128 << 10):
        h = rd(o, 4096)
        if h[:4] == b"head" and crc_ok(h):
            heads.append(h)
    assert heads, "no valid header"
    cur = max(heads, key=lambda h: struct.unpack_from("<Q", h, 8)[0])
    seq = struct.unpack_from("<Q", cur, 8)[0]
    ver, log_len, log_off = struct.unpack_from("<HIQ", cur, 66)
    assert ver == 1 and log_len % MIB == 0 and log_off % MIB == 0, "header fields"
    r, r2 = rd(192 << 10, 64 << 10), rd(256 << 10, 64 << 10)
    assert r == r2 and r[:4] == b"regi" and crc_ok(r), "region tables"
    reg = {}
    for i in range(struct.unpack_from("<I", r, 8)[0]):
        g = r[16 + 32 * i:32 + 32 * i].hex()
        reg[g] = struct.unpack_from("<QI", r, 32 + 32 * i)
        assert reg[g][0] % MIB == 0 and reg[g][1] % MIB == 0, "region alignment"
    bat_off, bat_len = reg[BAT_GUID]
    meta_off, meta_len = reg[META_GUID]
    m = rd(meta_off, 64 << 10)
    assert m[:8] == b"metadata", "metadata signature"
    items = {}
    for i in range(struct.unpack_from("<H", m, 10)[0]):
        g = m[32 + 32 * i:48 + 32 * i].hex()
        off, ln = struct.unpack_from("<II", m, 48 + 32 * i)
        assert off >= 64 << 10 and off + ln <= meta_len, "metadata item bounds"
        items[g] = rd(meta_off + off, ln)
    assert all(k in items for k in (PARAMS, VSIZE, PAGE83, LOGICAL, PHYSICAL)), "metadata items"
    block, flags = struct.unpack("<II", items[PARAMS])
    vsize = struct.unpack("<Q", items[VSIZE])[0]
    lss = struct.unpack("<I", items[LOGICAL])[0]
    assert flags == 0 and lss == 512 and vsize % lss == 0, "parameters"
    assert block >= MIB and block <= 256 * MIB and block & (block - 1) == 0, "block size"
    cr = (1 << 23) * lss // block
    nb = (vsize + block - 1) // block
    bat = rd(bat_off, bat_len)
    n_ent = nb + (nb - 1) // cr
    assert n_ent * 8 <= bat_len, "BAT too short"
    ent = [struct.unpack_from("<Q", bat, 8 * (b + b // cr))[0] for b in range(nb)]
    sb = [struct.unpack_from("<Q", bat, 8 * i)[0] for i in range(cr, n_ent, cr + 1)]
    f.seek(0, 2)
    return dict(block=block, vsize=vsize, ent=ent, sb=sb, seq=seq, size=f.tell(),
                end=max(bat_off + bat_len, meta_off + meta_len, log_off + log_len),
                cr=cr, bat_off=bat_off, log_off=log_off, log_len=log_len, head=cur)

def log_crash(path, at):
    v = parse(path)
    f = open(path, "r+b")
    newest = None
    for o in range(v["log_off"], v["log_off"] + v["log_len"], 4096):
        f.seek(o)
        e = f.read(64)
        if e[:4] == b"loge":
            seq = struct.unpack_from("<Q", e, 16)[0]
            if newest is None or seq > newest[0]:
                newest = (seq, e[32:48])
    assert newest, "no log entry"
    b = at // v["block"]
    f.seek(v["bat_off"] + 8 * (b + b // v["cr"]))
    f.write(struct.pack("<Q", 2))
    h = bytearray(v["head"])
    h[8:16] = struct.pack("<Q", v["seq"] + 1)
    h[48:64] = newest[1]
    h[4:8] = bytes(4)
    h[4:8] = struct.pack("<I", crc32c(h))
    f.seek(64 << 10)
    old = f.read(16)
    slot = 128 << 10 if struct.unpack_from("<Q", old, 8)[0] == v["seq"] and old[:4] == b"head" else 64 << 10
    f.seek(slot)
    f.write(h)
    f.close()

def check_vhdx(path, src):
    v = parse(path)
    data = open(src, "rb").read()
    assert v["vsize"] == (len(data) + 511) // 512 * 512, "virtual size %d" % v["vsize"]
    B = v["block"]
    nxt = (v["end"] + MIB - 1) // MIB * MIB
    for b, e in enumerate(v["ent"]):
        nonzero = any(data[b * B:(b + 1) * B])
        state, off = e & 7, e & ~((1 << 20) - 1)
        if not nonzero:
            assert e == 2, "block %d: zero on the disk, BAT entry %#x" % (b, e)
            continue
        assert state == 6 and off == nxt, "block %d: entry %#x, expected at %#x" % (b, e, nxt)
        nxt += B
    assert all(s == 0 for s in v["sb"]), "a sector bitmap entry is not zero"
    assert v["size"] == nxt, "file size %d, metadata + data %d" % (v["size"], nxt)

def chs(total):
    total = min(total, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads, cth = 31, 16, total // 31
        if cth >= heads * 1024:
            spt, heads, cth = 63, 16, total // 63
    return cth // heads, heads, spt

def check_vhd(path, src):
    size = len(open(src, "rb").read())
    cur = (size + MIB - 1) // MIB * MIB
    f = open(path, "rb")
    f.seek(0, 2)
    assert f.tell() == cur + 512, "file size %d for a disk of %d" % (f.tell(), size)
    f.seek(cur)
    ft = bytearray(f.read(512))
    assert ft[:8] == b"conectix", "cookie"
    s = struct.unpack_from(">I", ft, 64)[0]
    ft[64:68] = bytes(4)
    assert s == (~sum(ft)) & 0xFFFFFFFF, "checksum"
    feat, ver, doff = struct.unpack_from(">IIQ", ft, 8)
    assert feat == 2 and ver == 0x10000 and doff == (1 << 64) - 1, "features/version/offset"
    orig, curr, cyl, h, spt, typ = struct.unpack_from(">QQHBBI", ft, 40)
    assert orig == cur and curr == cur and typ == 2, "sizes or type"
    assert (cyl, h, spt) == chs(cur // 512), "CHS %r, expected %r" % ((cyl, h, spt), chs(cur // 512))
    assert any(ft[68:84]), "null UUID"

cmd, path = sys.argv[1], sys.argv[2]
if cmd == "check-vhdx":
    check_vhdx(path, sys.argv[3])
elif cmd == "check-vhd":
    check_vhd(path, sys.argv[3])
elif cmd == "hole":
    v = parse(path)
    print(next(b * v["block"] for b, e in enumerate(v["ent"]) if e & 7 in (0, 2)))
elif cmd == "entry":
    v = parse(path)
    e = v["ent"][int(sys.argv[3]) // v["block"]]
    print(e & 7, e & ~((1 << 20) - 1))
elif cmd == "log-crash":
    log_crash(path, int(sys.argv[3]))
elif cmd == "seq":
    print(parse(path)["seq"])
elif cmd == "uuid":
    f = open(path, "rb")
    f.seek(-512 + 68, 2)
    print(f.read(16).hex())
PY
