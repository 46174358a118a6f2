"""Stage `ship`: the verdict (which retriever to deploy, and why), retriever.json, the model card and
`ragtune.load_retriever` (`guards`)."""
