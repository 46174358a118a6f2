"""The data that passes between stages (nodes, pairs, eval sets, BEIR folders) and its JSON codecs;
`guard_general.json` is the general guard set (`guards=general`)."""
