#!/usr/bin/env python3
"""Prints the reference table for crates/merge/src/methods/reduce.rs: torch's float32
vector_norm and sum of reproducible LCG vectors, as bit patterns.

Run with torch installed (torch 2.15 was used) and torch.set_num_threads(2), the thread
count of the reference machine. Not part of CI: the table it prints is committed."""
import struct

import torch

torch.set_num_threads(2)


def lcg(n, seed):
    state, out = seed, []
    for _ in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        out.append(((state >> 40) / 2**24) * 2 - 1)
    return torch.tensor(out, dtype=torch.float32)


def bits(x):
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]


cases = [(1, 1), (5, 2), (8, 3), (13, 4), (100, 5), (1000, 6), (4099, 7), (32768, 8),
         (65537, 9), (100003, 10), (1 << 20, 11)]
for n, seed in cases:
    x = lcg(n, seed).reshape(1, -1)
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).item()
    total = x.sum(dim=1, keepdim=True).item()
    print(f"        ({n}, {seed}, 0x{bits(norm):08x}, 0x{bits(total):08x}),")
