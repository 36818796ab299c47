"""The raw-data contract: `schema` (`CallRecord`, the one record schema, and the line
validator of `calls.jsonl`) and `calls_table` (the columnar `calls.parquet` copy and the Arrow
reader that gives the statistics either file as the same table)."""
