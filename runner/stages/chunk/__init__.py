"""Stage `chunk`: Documents in, TextNodes out, sized to fit the base model's window (`chunker`)."""
