"""Stage `generate`: train nodes in, (question, chunk) pairs out: offline, from a file, or from an LLM
(`qa_generator`)."""
