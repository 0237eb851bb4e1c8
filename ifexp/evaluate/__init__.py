"""Generation engines, benchmarks and graders (no Hydra)."""
