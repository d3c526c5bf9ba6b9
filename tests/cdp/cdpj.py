#!/usr/bin/env python3
"""cdpj.py: read and edit a CDP journal (FORMAT.md section 15) for the damage tests.

  cdpj.py J at TIME            interval of the last checkpoint at or before TIME
  cdpj.py J flip AFTER [fix]   flip a ciphertext byte of the first data record after
                               checkpoint AFTER (fix: its rec_hash and frame hash rewritten)
  cdpj.py J swap AFTER         swap the first two record frames after checkpoint AFTER
  cdpj.py J replay FROM AFTER  copy the first data record after checkpoint FROM into the
                               first interval with records after checkpoint AFTER (interval field, checkpoints'
                               offsets, counts and checksums fixed: only the key can tell)
  cdpj.py J retime K SECONDS   set checkpoint K's time (checksum fixed)
  cdpj.py J ends               "END INTERVAL" of every checkpoint frame (END: its last byte + 1)
  cdpj.py J blocks K           the block of every record frame of interval K, in file order
"""
import struct
import sys

from icimg import xxh64

REC, CK = 0x524a4349, 0x434a4349


def ck_len(d):
    """a checkpoint frame's bytes: 128 in version 1, 160 in version 2 (the map seal)"""
    return 128 if struct.unpack_from("<I", d, 8)[0] == 1 else 160


def frames(d):
    off, out, cl = 4096, [], ck_len(d)
    while off + 64 <= len(d):
        magic = struct.unpack_from("<I", d, off)[0]
        if magic == REC:
            kind, _, pos, interval, slen = struct.unpack_from("<HHQQI", d, off + 4)
            out.append(dict(off=off, ck=False, kind=kind, interval=interval, len=64 + slen,
                            pos=pos))
            off += 64 + slen
        elif magic == CK and off + cl <= len(d):
            interval, ts, tns = struct.unpack_from("<QqI", d, off + 8)
            out.append(dict(off=off, ck=True, interval=interval, len=cl, t=(ts, tns)))
            off += cl
        else:
            break
    return out


def rehash(d, f):
    if f["ck"]:
        n = f["len"] - 8
        struct.pack_into("<Q", d, f["off"] + n, xxh64(bytes(d[f["off"]:f["off"] + n])))
    else:
        o = f["off"]
        slen = struct.unpack_from("<I", d, o + 24)[0]
        if slen:
            struct.pack_into("<Q", d, o + 32, xxh64(bytes(d[o + 64:o + 64 + slen])))
        struct.pack_into("<Q", d, o + 56, xxh64(bytes(d[o:o + 56])))


def recs_after(fs, after):
    return [f for f in fs if not f["ck"] and f["interval"] > after]


def main():
    path, op, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    d = bytearray(open(path, "rb").read())
    fs = frames(d)
    if op == "at":
        sec, _, frac = args[0].partition(".")
        t = (int(sec), int((frac + "000000000")[:9]))
        print(max(f["interval"] for f in fs if f["ck"] and f["t"] <= t))
        return
    if op == "blocks":
        for f in fs:
            if not f["ck"] and f["interval"] == int(args[0]):
                print(f["pos"])
        return
    if op == "ends":
        for f in fs:
            if f["ck"]:
                print(f["off"] + f["len"], f["interval"])
        return
    if op == "flip":
        f = [f for f in recs_after(fs, int(args[0])) if f["kind"]][0]
        d[f["off"] + 64 + 30] ^= 0x40      # inside the ciphertext
        if args[1:] == ["fix"]:
            rehash(d, f)
    elif op == "swap":
        a, b = recs_after(fs, int(args[0]))[:2]
        assert a["interval"] == b["interval"] and b["off"] == a["off"] + a["len"], "not adjacent"
        fa, fb = bytes(d[a["off"]:a["off"] + a["len"]]), bytes(d[b["off"]:b["off"] + b["len"]])
        d[a["off"]:a["off"] + a["len"] + b["len"]] = fb + fa
    elif op == "replay":
        src = [f for f in recs_after(fs, int(args[0])) if f["kind"]][0]
        dst = recs_after(fs, int(args[1]))[0]
        frame = bytearray(d[src["off"]:src["off"] + src["len"]])
        struct.pack_into("<Q", frame, 16, dst["interval"])
        struct.pack_into("<Q", frame, 56, xxh64(bytes(frame[:56])))
        d[dst["off"]:dst["off"]] = frame
        # every later checkpoint moves; the one ending dst's interval counts one more frame
        for f in frames(d):
            if f["ck"] and f["off"] > dst["off"]:
                struct.pack_into("<Q", d, f["off"] + 40, f["off"])
                if f["interval"] == dst["interval"]:
                    n = struct.unpack_from("<Q", d, f["off"] + 32)[0]
                    struct.pack_into("<Q", d, f["off"] + 32, n + 1)
                rehash(d, f)
    elif op == "retime":
        f = [f for f in fs if f["ck"] and f["interval"] == int(args[0])][0]
        struct.pack_into("<q", d, f["off"] + 16, int(args[1]))
        rehash(d, f)
    else:
        sys.exit("unknown op " + op)
    open(path, "wb").write(d)


main()
