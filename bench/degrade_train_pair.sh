# Training speed with and without augment_scan IN THE SAME CONDITIONS on a shared machine: both runs of
# config/reader.py at once, one torch thread each, for the same wall-clock window; then samples/s of each
# over the iterations it finished in that window (the first 5 left out). Usage: bash bench/degrade_train_pair.sh [seconds]
T=${1:-420}
for s in 0 0.5; do
  python train.py config/reader.py --data_dir=data/m21/quick --out_dir=out-pair-scan$s --max_iters=2000 \
    --eval_interval=100000 --eval_iters=1 --eval_decode_samples=8 --eval_test_samples=8 --cpu_threads=1 \
    --augment_scan=$s > out-pair-scan$s.log 2>&1 &
done
sleep $T
kill -TERM $(jobs -p) 2>/dev/null; wait
for s in 0 0.5; do
  echo "augment_scan=$s: $(grep -o 'time [0-9.]*ms' out-pair-scan$s.log | tail -n +6 | awk '{gsub("ms","",$2); t+=$2; n++} END {printf "%d iterations, %.2f samples/s", n, 32*n/(t/1000)}')"
done
