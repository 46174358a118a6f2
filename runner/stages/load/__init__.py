"""Stage `load`: the corpus config in, llama-index Documents with stable ids out (`corpus`)."""
