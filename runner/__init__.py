"""ragtune: finetune sentence-embedding models for RAG retrieval, and prove the gain with numbers."""

import os

# JAX, where it is installed beside torch (GPU images often have both), takes 75% of a GPU's memory at its
# first use, and some library on the run's path wakes it: on an H200 one run then held 106 of 140 GiB outside
# PyTorch and a second job on the same GPU ran out of memory. Grow it on demand instead; a value the user set wins.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

__version__ = "0.1.0"
