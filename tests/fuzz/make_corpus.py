#!/usr/bin/env python3
"""Seed corpora for the fuzzers, cut from the golden chain files.
usage: make_corpus.py GOLDEN_DIR OUT_DIR"""
import os, struct, sys

golden, out = sys.argv[1], sys.argv[2]
def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)

imgs = sorted(f for f in os.listdir(golden) if f.endswith('.img'))
blobs = [open(os.path.join(golden, f), 'rb').read() for f in imgs]
put('fuzz_keyfile', 'golden.key', open(os.path.join(golden, 'imgchain.key'), 'rb').read())
for name, b in zip(imgs, blobs):
    put('fuzz_header', name, b[:4096])
    put('fuzz_chain', name, b)
    # records: entry fields + record bytes, in fuzz_record's layout
    slot = b[1024:1536]
    io, n = struct.unpack_from('<QQ', slot, 40)
    for i in range(min(n, 8)):
        pos, off, slen, plen, origin, kind = struct.unpack_from('<QQIIIH', b, io + 64 * i)
        if kind == 0:
            continue
        head = struct.pack('<IIHI', slen, plen, kind, origin) + bytes([pos & 0xff, 0])
        put('fuzz_record', '%s-%d' % (name, i), head + b[off:off + slen])
put('fuzz_chain', 'all', b'\n--8<--\n'.join(blobs))
put('fuzz_changed', 'simple', b'0 65536\n131072 4096\n# comment\n\n  8192\t100\n')
put('fuzz_changed', 'hex', b'0x1000 0x2000\n')
put('fuzz_vmdk', 'small', struct.pack('<QIQI', 5 * 2**20 + 1234, 65536, 0, 65536))
put('fuzz_vmdk', 'big', struct.pack('<QIQI', 2**40, 65536, 2**20, 2**20))
# the key holder's state file (FORMAT.md "State file"), both versions
put('fuzz_state', 'v1', b'seq 3\nseal ' + b'ab' * 32 + b'\nname daily-3\n')
put('fuzz_state', 'v2', b'imgchain-state 2\nkeygen 1 ' + b'0f' * 16 + b'\npoint 1 ' + b'01' * 32 +
    b' mon\npoint 7 ' + b'fe' * 32 + b' tue.2026-12-03\n')
# the consolidation journal (FORMAT.md "Journal"); fuzz_journal appends the sum line when the
# last byte is odd
put('fuzz_journal', 'commit', b'imgchain-journal 1\nphase commit\nremove 3 2\ninplace 1 3 123456\n'
    b'target 5 4\npunch 2\n\x01')
put('fuzz_journal', 'idle', b'imgchain-journal 1\nphase idle\npunch 7\npunch 9\n\x01')
