"""Stage `export`: the shipped model in the formats a CPU serves fastest (ONNX, int8, a static
model), each scored on the eval set, paired against the torch model it came from, and timed."""
