"""A NanoBEIR set as a BEIR folder, for `guard.sets` (run once, on a machine with network):

    python scripts/nanobeir_guard.py NanoNFCorpus data/nano_nfcorpus
    python -m runner +guard.sets.nfcorpus='{kind: beir, path: data/nano_nfcorpus, split: test}'

NanoBEIR (Zeta Alpha; sentence-transformers/NanoBEIR-en on the Hugging Face hub, the copy
sentence-transformers' NanoBEIREvaluator reads) has 13 sets of 50 queries and up to 10k documents:
NanoArguAna, NanoClimateFEVER, NanoDBPedia, NanoFEVER, NanoFiQA2018, NanoHotpotQA, NanoMSMARCO,
NanoNFCorpus, NanoNQ, NanoQuoraRetrieval, NanoSCIDOCS, NanoSciFact, NanoTouche2020.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DATASET = "sentence-transformers/NanoBEIR-en"


def write_beir(name: str, out: str | Path, load=None) -> Path:
    """corpus.jsonl, queries.jsonl and qrels/test.tsv of NanoBEIR set `name` in `out`."""
    if load is None:
        from datasets import load_dataset as load
    rows = lambda subset: load(DATASET, subset, split=name)  # noqa: E731
    out = Path(out)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for r in rows("corpus"):
            f.write(json.dumps({"_id": str(r["_id"]), "title": "", "text": r["text"]}, ensure_ascii=False) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for r in rows("queries"):
            f.write(json.dumps({"_id": str(r["_id"]), "text": r["text"]}, ensure_ascii=False) + "\n")
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for r in rows("qrels"):
            ids = r["corpus-id"] if isinstance(r["corpus-id"], list) else [r["corpus-id"]]
            f.writelines(f"{r['query-id']}\t{d}\t1\n" for d in ids)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(write_beir(sys.argv[1], sys.argv[2]))
