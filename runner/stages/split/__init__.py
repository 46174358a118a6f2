"""Stage `split`: nodes in, train and held-out nodes out, by document, seeded (`split`, `dev`)."""
