#!/usr/bin/env python3
# Writes RESP (for redis-cli --pipe) for N_CALLS EVALSHA calls of BATCH entries each over KEYS sessions, as wsfleet
# sends them in steady state: every session counts up, one attempt after another.
import sys

# Usage: increment-calls.py SHA old|new CALLS BATCH SESSIONS > calls.resp
sha, kind, calls, batch, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
out = sys.stdout.buffer
def cmd(args):
    out.write(b"*%d\r\n" % len(args))
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.write(b"$%d\r\n%s\r\n" % (len(a), a))
seq = [0] * keys
k = 0
for c in range(calls):
    ks, argv = [], [86400000]
    for _ in range(batch):
        i = k % keys; k += 1
        seq[i] += 1
        ks.append("wsfleet:session:ab-%d" % i)
        if kind == "old":
            argv += ["i:%d:%d" % (i, seq[i]), 0]
        else:
            argv += ["tok-%d" % i, 0, seq[i] - 1]
    cmd(["EVALSHA", sha, len(ks)] + ks + argv)
