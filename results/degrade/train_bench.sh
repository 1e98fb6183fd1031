cd /work/wt-degrade
for rep in 1 2; do
for s in 0 0.5; do
  python train.py config/reader.py --data_dir=data/m21/quick --out_dir=out-bench-scan$s --max_iters=30 --eval_interval=1000 --eval_iters=1 --eval_decode_samples=8 --eval_test_samples=8 --max_time_minutes=0 --augment_scan=$s > /tmp/deg_tb_${s}_$rep.log 2>&1
  echo "scan=$s rep=$rep load=$(cut -d' ' -f1 /proc/loadavg) $(grep -o '[0-9.]* samples/s' /tmp/deg_tb_${s}_$rep.log | tail -n +7 | awk '{s+=$1;n++} END {print s/n, n}')"
done; done
