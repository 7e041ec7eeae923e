"""Copies an MLX model folder's small files to DEST (all but tokenizer.json, which is the
input's) and writes DEST/tensors.json: per safetensors file, the SHA-256 of the whole file,
its header's length, and every tensor's dtype, shape, data offsets and the SHA-256 of its
bytes (read from the file's own header, without MLX); per other file, the SHA-256 of its
bytes."""

import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

src, dest = Path(sys.argv[1]), Path(sys.argv[2])
manifest = {}
for path in sorted(src.iterdir()):
    if path.suffix == ".safetensors":
        data = path.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        body = data[8 + n :]
        tensors = {}
        for name, info in sorted(header.items()):
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            tensors[name] = {
                "data_offsets": [start, end],
                "dtype": info["dtype"],
                "shape": info["shape"],
                "sha256": hashlib.sha256(body[start:end]).hexdigest(),
            }
        manifest[path.name] = {
            "bytes": len(data),
            "header_bytes": n,
            "metadata": header.get("__metadata__"),
            "sha256": hashlib.sha256(data).hexdigest(),
            "tensors": tensors,
        }
    else:
        manifest[path.name] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        if path.name != "tokenizer.json" and path.stat().st_size < 64 * 1024:
            shutil.copy(path, dest / path.name)
(dest / "tensors.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
