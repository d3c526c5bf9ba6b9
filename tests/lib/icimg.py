"""icimg: read, edit and rewrite imgchain image files (layout of format/imgchain_format.h)."""
import ctypes, struct

_x = ctypes.CDLL("libxxhash.so.0")
_x.XXH3_64bits.restype = ctypes.c_uint64
_x.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


class _H128(ctypes.Structure):
    _fields_ = [("low64", ctypes.c_uint64), ("high64", ctypes.c_uint64)]


_x.XXH3_128bits.restype = _H128
_x.XXH3_128bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def xxh64(b):
    b = bytes(b)
    return _x.XXH3_64bits(b, len(b))


def xxh128(b):
    """XXH3-128 in XXH128_canonicalFromHash form (what the library stores)."""
    b = bytes(b)
    h = _x.XXH3_128bits(b, len(b))
    return struct.pack(">QQ", h.high64, h.low64)


HEADER_SIZE, SLOT_A, SLOT_B = 4096, 1024, 2048
HDR_FMT = "<8sII16s16sIIII440sQ"
HDR_KEYS = ("magic version header_size chain_id key_check block_size cipher compress reserved0 "
            "reserved hdr_hash").split()
# slot: point_id and seal_keygen are v2's (zero in v1)
SLOT_FMT = "<QIIIIqQQQQQQ16s32s128sQQH230sQ"
SLOT_KEYS = ("generation seq parent_seq kind flags created disk_size index_offset index_count "
             "data_bytes n_data n_zero index_hash seal name data_end point_id seal_keygen "
             "reserved slot_hash").split()
# entries: v1 has flags at 30 and entry_hash at 56, v2 keygen and origin_id
ENT_FMT = "<QQIIIHHQ16sQ"
ENT_KEYS_V1 = "pos offset stored_len plain_len origin kind flags rec_hash digest entry_hash".split()
ENT_KEYS_V2 = "pos offset stored_len plain_len origin kind keygen rec_hash digest origin_id".split()
ENT_KEYS = ENT_KEYS_V1
ZERO, RAW, ZSTD = 0, 1, 2
assert struct.calcsize(HDR_FMT) == 512 and struct.calcsize(SLOT_FMT) == 512
assert struct.calcsize(ENT_FMT) == 64


def ent_keys(version):
    return ENT_KEYS_V1 if version == 1 else ENT_KEYS_V2


def entry_pack(e, version=1, fix=True):
    """The 64 bytes of entry e; v1 with fix: entry_hash recomputed (v2 has none)."""
    if version != 1:
        return struct.pack(ENT_FMT, *[e[k] for k in ENT_KEYS_V2])
    raw = struct.pack(ENT_FMT, *[e[k] if k != "entry_hash" else 0 for k in ENT_KEYS_V1])
    if not fix:
        return raw[:56] + struct.pack("<Q", e["entry_hash"])
    return raw[:56] + struct.pack("<Q", xxh64(raw[:56]))


def header_pack(h):
    raw = struct.pack(HDR_FMT, *[h[k] if k != "hdr_hash" else 0 for k in HDR_KEYS])
    return raw[:504] + struct.pack("<Q", xxh64(raw[:504]))


def slot_pack(s):
    raw = struct.pack(SLOT_FMT, *[s[k] if k != "slot_hash" else 0 for k in SLOT_KEYS])
    return raw[:504] + struct.pack("<Q", xxh64(raw[:504]))


class Image:
    """One image file.  entries: list of dicts (ENT_KEYS + 'record': the stored bytes)."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.data = f.read()
        self.header = dict(zip(HDR_KEYS, struct.unpack(HDR_FMT, self.data[:512])))
        self.version = self.header["version"]
        slots = []
        for off in (SLOT_A, SLOT_B):
            raw = self.data[off:off + 512]
            s = dict(zip(SLOT_KEYS, struct.unpack(SLOT_FMT, raw)))
            ok = s["generation"] and s["slot_hash"] == xxh64(raw[:504])
            slots.append((s["generation"] if ok else -1, off, s))
        gen, self.slot_off, self.slot = max(slots, key=lambda t: t[0])
        if gen < 0:
            raise ValueError("%s: no valid slot" % path)
        s = self.slot
        self.name = s["name"].rstrip(b"\0").decode()
        self.entries = []
        for i in range(s["index_count"]):
            off = s["index_offset"] + 64 * i
            e = dict(zip(ent_keys(self.version),
                         struct.unpack(ENT_FMT, self.data[off:off + 64])))
            e["record"] = self.data[e["offset"]:e["offset"] + e["stored_len"]]
            self.entries.append(e)

    def data_entries(self):
        return [e for e in self.entries if e["kind"] != ZERO]

    def entry(self, pos):
        for e in self.entries:
            if e["pos"] == pos:
                return e
        raise KeyError("%s: no entry for block %d" % (self.path, pos))

    def _patch(self, off, raw):
        with open(self.path, "r+b") as f:
            f.seek(off)
            f.write(raw)

    def write_header(self):
        """Write self.header back in place, with a correct checksum."""
        self._patch(0, header_pack(self.header))

    def write_slot(self):
        """Write self.slot back in place (no field recomputed but the checksum)."""
        self._patch(self.slot_off, slot_pack(self.slot))

    def write_entry(self, e):
        """Write entry e back in place at its index position, with a correct entry checksum;
        the index checksum in the slot is recomputed and the slot written too."""
        i = self.entries.index(e)
        off = self.slot["index_offset"] + 64 * i
        self._patch(off, entry_pack(e, self.version))
        with open(self.path, "rb") as f:
            f.seek(self.slot["index_offset"])
            index = f.read(64 * self.slot["index_count"])
        self.slot["index_hash"] = xxh128(index)
        self.write_slot()

    def write(self, path=None, fix=True):
        """Lay the file out anew: header, both slots (the current one refreshed), records in
        index order, index.  With fix, every checksum (rec_hash kept as given) is recomputed."""
        out = bytearray(self.data[:HEADER_SIZE])
        out[:512] = header_pack(self.header) if fix else out[:512]
        for e in self.entries:
            if e["kind"] == ZERO:
                e["offset"] = 0
                continue
            e["offset"] = len(out)
            out += e["record"]
        s = self.slot
        s["index_offset"] = len(out)
        s["index_count"] = len(self.entries)
        s["n_data"] = len(self.data_entries())
        s["n_zero"] = s["index_count"] - s["n_data"]
        s["data_bytes"] = sum(e["stored_len"] for e in self.data_entries())
        index = b"".join(entry_pack(e, self.version, fix) for e in self.entries)
        out += index
        s["data_end"] = len(out)
        if fix:
            s["index_hash"] = xxh128(index)
        out[self.slot_off:self.slot_off + 512] = slot_pack(s)
        with open(path or self.path, "wb") as f:
            f.write(out)


# ---- the key file (imgchain.key: format/FORMAT.md, the key file section) ----------------------
# magic 0..8, version, chain_id 16..32, key_check 32..48, 8 slots of 128 bytes from 48 (state @0,
# opslimit @8, memlimit @16, salt @24, nonce @40, wrapped key @64), XXH3-64 of bytes 0..1112 @1112
KEY_SIZE, KEY_HASH_OFF = 1120, 1112
KEY_CHAIN_ID, KEY_CHECK = 16, 32
KEY_SLOTS, KEY_SLOT_SIZE = 8, 128


def key_slot(i):
    """Offset of key file slot i."""
    return 48 + KEY_SLOT_SIZE * i


def key_rehash(d):
    """Recompute the key file checksum of bytearray d in place."""
    struct.pack_into("<Q", d, KEY_HASH_OFF, xxh64(d[:KEY_HASH_OFF]))


def header_rehash(d):
    """Recompute the image header checksum of bytearray d in place."""
    struct.pack_into("<Q", d, 504, xxh64(d[:504]))


def slot_rehash(d, off):
    """Recompute the checksum of the slot at off of bytearray d in place."""
    struct.pack_into("<Q", d, off + 504, xxh64(d[off:off + 504]))
