"""Stage `report`: results.json, the console tables, the per-query file."""
