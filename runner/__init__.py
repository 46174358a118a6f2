"""ragtune: finetune sentence-embedding models for RAG retrieval, and prove the gain with numbers."""

__version__ = "0.1.0"
