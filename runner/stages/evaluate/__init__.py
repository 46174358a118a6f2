"""Stage `evaluate`: the eval set, the dense models, BM25 and the hybrids scored alike, and the choices
made on the dev split (`eval_set`, `evaluate`, `baselines`, `merge`, `base_model.max_seq_length: auto`)."""
