"""
bench/: measurements. Benchmarks, studies and the scripts whose outputs live in results/. Each runs
from the repository root as a module, e.g. `python -m bench.pages`.

    loader.py             data-loader throughput (samples/s)
    decode.py             the KV cache's decoding speed-up
    pages.py, systems.py  staff and system finding on engraved pages; page SER vs line SER
    ptq.py                post-training quantization: size, speed and SER per mode
    vram_report.py        the report half of bench_vram.py (Pareto front, recommendations, plots)
    study.py              the seven-backbone study (runs train.py per backbone, gathers the table)
    holdout_report.py, holdout_errors.py   the held-out-font study's table and its edits by symbol kind
    cpu_recipe_report.py, cpu_recipe.sh     the CPU recipe's ablations
    poly_report.py        the polyphonic run's per-kind table
    killloop.py, faults.py                  robustness: kill/resume loop, corrupt-file matrix
    bitcheck.py           behaviour unchanged bit for bit across a refactor
"""
