#!/usr/bin/env python3
"""Seed corpora for the fuzzers, cut from the golden chain files (both versions).
usage: make_corpus.py GOLDEN_DIR... OUT_DIR"""
import os, struct, sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, 'lib'))
import icimg    # tests/lib/icimg.py: the image layout, read once for the tests and this

goldens, out = sys.argv[1:-1], sys.argv[-1]
def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)

for golden in goldens:
    tag = os.path.basename(os.path.normpath(golden))
    put('fuzz_keyfile', 'golden-%s.key' % tag,
        open(os.path.join(golden, 'imgchain.key'), 'rb').read())
    imgs = sorted(f for f in os.listdir(golden) if f.endswith('.img'))
    blobs = [open(os.path.join(golden, f), 'rb').read() for f in imgs]
    for name, b in zip(imgs, blobs):
        img = icimg.Image(os.path.join(golden, name))
        name = '%s-%s' % (tag, name)
        put('fuzz_header', name, b[:icimg.HEADER_SIZE])
        put('fuzz_chain', name, b)
        # records: entry fields + record bytes, in fuzz_record's layout (byte 15: bit 0 the
        # version, v2's point id above it, truncated: the AEAD fails, the paths are reached)
        for i, e in enumerate(img.entries[:8]):
            if e['kind'] == icimg.ZERO:
                continue
            sel = 0 if img.version == 1 else 1 | ((e['origin_id'] & 0x7f) << 1)
            head = struct.pack('<IIHI', e['stored_len'], e['plain_len'], e['kind'],
                               e['origin']) + bytes([e['pos'] & 0xff, sel])
            put('fuzz_record', '%s-%d' % (name, i), head + e['record'])
    put('fuzz_chain', '%s-all' % tag, b'\n--8<--\n'.join(blobs))
put('fuzz_changed', 'simple', b'0 65536\n131072 4096\n# comment\n\n  8192\t100\n')
put('fuzz_changed', 'hex', b'0x1000 0x2000\n')
put('fuzz_vmdk', 'small', struct.pack('<QIQI', 5 * 2**20 + 1234, 65536, 0, 65536))
put('fuzz_vmdk', 'big', struct.pack('<QIQI', 2**40, 65536, 2**20, 2**20))
put('fuzz_vhdx', 'small', struct.pack('<QQIB', 9 * 2**20 + 1234, 4 * 2**20 - 100, 65536, 0) +
    bytes([0, 1, 0, 1, 0, 4, 2, 3, 0, 9, 0, 1]))
# the most negative creation time (signed overflow in ic_vhd_init, found by this target)
put('fuzz_vhdx', 'created-min', bytes.fromhex(
    '00feffff280f000000000030000000800' '0ffff039075' '00ffffffff0000009cff1f0000040000003a3b3c000010bf9036373839983b3c3d3e3f'))
put('fuzz_vhdx', 'big', struct.pack('<QQIB', 2**36 - 512, 2**20 * 3, 2**18 - 1, 3) + bytes(range(64)))

# fuzz_overlay: a map (format/FORMAT.md "Overlay") with slot 0 blank, a header of generation 1
# in slot 1 and bitmap page 0 in its slot 0; checksums are left to the fuzzer's fix-up (the
# last byte is odd: fixed up)
hdr = struct.pack('<8sIIIIQQQQQ', b'ICOVLMAP', 2, 4096, 32512, 1, 1, 1000000, 1000000,
                  1000000, 0) + bytes(range(48)) + b'restore point \'p2\' (seq 2)'
page = struct.pack('<IIQQQ', 0x50564f49, 0, 1, 0, 0) + b'\x0f' + bytes(4096 - 32 - 2) + b'\x01'
put('fuzz_overlay', 'map', bytes(4096) + hdr.ljust(4096, b'\0') + page)
put('fuzz_overlay', 'empty', b'')
# the key holder's state file (FORMAT.md "State file"), both versions
put('fuzz_state', 'v1', b'seq 3\nseal ' + b'ab' * 32 + b'\nname daily-3\n')
put('fuzz_state', 'v2', b'imgchain-state 2\nkeygen 1 ' + b'0f' * 16 + b'\npoint 1 ' + b'01' * 32 +
    b' mon\npoint 7 ' + b'fe' * 32 + b' tue.2026-12-03\n')
# the overlay owner record and release request (FORMAT.md 10.7)
_owner = (b'host h1\nboot 01234567-89ab-cdef-0123-456789abcdef\npidns 4026531836\npid 42\nstart 7\n'
          b'since 1796290000\nserver imgmount\nwhere /mnt/a b\ntoken ' + b'0f' * 16 + b'\n')
put('fuzz_owner', 'owner', b'imgchain-owner 1\n' + _owner)
put('fuzz_owner', 'request', b'imgchain-release 1\n' + _owner + b'wait 30\n')
# the consolidation journal (FORMAT.md "Journal"); fuzz_journal appends the sum line when the
# last byte is odd
put('fuzz_journal', 'commit', b'imgchain-journal 1\nphase commit\nremove 3 2\ninplace 1 3 123456\n'
    b'target 5 4\npunch 2\n\x01')
put('fuzz_journal', 'idle', b'imgchain-journal 1\nphase idle\npunch 7\npunch 9\n\x01')
