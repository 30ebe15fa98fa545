#!/usr/bin/env bash
# The one GPU command (under 8 minutes on one H100/H200): the cross-backend check of every fused function (CPU vs
# GPU, unsharded and batch-sharded), then the GPU benchmark rows of the fused cross-entropy and of every LM-head
# function against their naive versions. Tables go to stdout and to benchmarks/results/*_gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
FUSED=linear_softmax_cross_entropy,linear_token_statistics,linear_kl_divergence,linear_js_divergence,linear_sparse_kl_divergence
echo "== crosscheck of the fused functions"
python -m jxent.testing.crosscheck --losses "$FUSED" --sharded --output "$OUT/crosscheck_fused_gpu.md"
echo "== GPU benchmark rows: fused cross-entropy and LM-head functions vs naive"
python benchmarks/bench_large_vocab.py --sections gpu,lm_head_gpu --repeats 3 | tee "$OUT/large_vocab_gpu.md"
