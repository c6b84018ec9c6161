"""Embeddings: a small engine of its own (loader, batcher, worker) beside ``engine/``.

It shares the config, the BLAS/dtype policy and the middleware with the chat server,
not the text scheduler: an encoder has no KV cache and no decode loop.
"""
