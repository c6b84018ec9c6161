"""vllm-mlx: an OpenAI- and Anthropic-compatible LLM inference server on MLX."""

__version__ = "0.1.0"
