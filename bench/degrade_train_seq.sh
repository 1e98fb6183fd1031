# Training speed of config/reader.py on data/m21/quick (2 threads, as the quick start), augment_scan 0 and
# 0.5 one after the other, twice, 40 iterations each: samples/s over iterations 6-40 (total images / total
# step time). Only meaningful on a quiet machine; the load average is printed next to each.
for rep in 1 2; do
for s in 0 0.5; do
  python train.py config/reader.py --data_dir=data/m21/quick --out_dir=out-seq-scan$s --max_iters=40 \
    --eval_interval=100000 --eval_iters=1 --eval_decode_samples=8 --eval_test_samples=8 --augment_scan=$s > out-seq-scan$s.log 2>&1
  echo "augment_scan=$s rep=$rep load=$(cut -d' ' -f1 /proc/loadavg): $(grep -o 'time [0-9.]*ms' out-seq-scan$s.log | tail -n +6 | awk '{gsub("ms","",$2); t+=$2; n++} END {printf "%d iterations, %.1f samples/s", n, 32*n/(t/1000)}')"
done; done
