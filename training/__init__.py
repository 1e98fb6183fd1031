"""
training/: the machinery behind train.py's loop, one job per file.

    step.py        one optimizer step: forward + backward over the micro-batches, clip, step (AMP, DDP, KD)
    evaluation.py  val/test scoring (SER, CER, exact lines), the held-out-font ratio, the printed reports
    checkpoint.py  checkpoints saved and loaded (weights, config, optimizer, RNG), resume, LoRA adapters
    runlog.py      log.jsonl and loss.png, and reading a finished run back
    preempt.py     time limits and stop signals (SIGTERM, SIGUSR1, max_time_minutes), fit_to_time
"""
