"""Stage `evaluate`: the eval set, the dense models, BM25 and the hybrids scored alike, and the choices made
before training on every training-side question (`before_training`: the window, BM25, the base hybrid) and
after it on the dev split (the merge weight, the finetuned hybrid's weight); configs `eval_set`, `evaluate`,
`baselines`, `merge`, `base_model.max_seq_length: auto`."""
