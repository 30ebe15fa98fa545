#!/usr/bin/env bash
# Runs the CPU benchmarks of two checkouts of jxent alternately, in one session, so that their ratios can be compared
# under the same machine load:  bash benchmarks/interleave.sh BEFORE_DIR AFTER_DIR [ROUNDS] [OUT_DIR]
# Each checkout's own benchmark scripts run against its own package (PYTHONPATH); the tables land in OUT_DIR.
set -euo pipefail
before=$(cd "$1" && pwd); after=$(cd "$2" && pwd); rounds=${3:-2}; out=${4:-/tmp/jxent-interleave}
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  for side in before after; do
    dir=$before; [ "$side" = after ] && dir=$after
    echo "== round $round, $side ($dir)"
    (cd "$dir" && PYTHONPATH="$dir" python benchmarks/bench_losses.py --shapes 4096x32000 --dtypes float32 \
      --repeats 15 --max-seconds-per-row 60 --no-progress --output "$out/dense_${side}_${round}.md" >/dev/null)
    (cd "$dir" && PYTHONPATH="$dir" python benchmarks/bench_large_vocab.py --sections cpu,compile \
      > "$out/large_vocab_${side}_${round}.md")
  done
done
echo "tables in $out"
