#!/bin/sh
# MLX's Linux CPU wheel links a reference BLAS; Debian's OpenBLAS makes fp32
# matmul ~40x faster. vllm-mlx loads it at start-up when it is installed.
[ "$(uname -s)" = "Linux" ] || exit 0
if ls /usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0 >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing libopenblas0-pthread (optimized BLAS for MLX on CPU)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread; } \
        >/dev/null 2>&1 && exit 0
fi
echo "WARNING: no optimized BLAS found; MLX on CPU will use its reference BLAS (much slower)." >&2
echo "         Install Debian/Ubuntu's libopenblas0-pthread, or set VLLM_MLX_BLAS=/path/to/libopenblas.so" >&2
exit 0
