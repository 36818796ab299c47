"""ollabench: reproducible, data-versioned benchmarks of LLM agents on local inference servers."""

__version__ = "0.1.0"
