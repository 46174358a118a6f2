"""Read an offline W&B run's `.wandb` file: a LevelDB-style log of protobuf `Record`s.

wandb 0.31 ships no Python reader for it. The layout: a 7-byte header (":W&B", magic 0xBEE1,
version), then 32 KiB blocks of chunks, each with a 7-byte header (crc32, length, type), where type
1 is a whole record and 2/3/4 are the first/middle/last pieces of one that spans blocks.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block tail too short for a header is zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            records.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            records.append(pending + chunk)
    return [pb.Record.FromString(r) for r in records]


def run_contents(path: str | Path) -> dict:
    """{"config": {key: value}, "history": [{key: value}], "summary": {key: value}} of one run."""
    out: dict = {"config": {}, "history": [], "summary": {}}
    for rec in read_records(path):
        kind = rec.WhichOneof("record_type")
        if kind in ("run", "config"):  # the run record carries the config given to wandb.init
            updates = rec.run.config.update if kind == "run" else rec.config.update
            for item in updates:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            for item in rec.summary.update:
                out["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out
