"""KV cache bookkeeping: block pool, block tables and the prefix cache (no MLX)."""
