"""Stage `finetune`: the base model and the pairs in, a model directory out (`base_model`, `finetune`):
epochs, the time budget and the batches are chosen here."""
