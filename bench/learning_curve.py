"""
bench/learning_curve.py: how much more training a target SER would take, from the runs' own logs.

Chains train.py logs (log.jsonl: samples_seen, val_ser at each eval) of runs that continue one another,
fits a power law SER = a * samples^-alpha (Kaplan et al. 2020, "Scaling laws for neural language
models": loss falls as a power of the data seen) by least squares in log-log, and prints the samples,
and the hours at a given rate, that the fit says reach `target`. A second line answers the same with
alpha = 1 (SER halves when the samples double, far faster than any of our runs learned): a lower bound,
so "it does not fit in the budget" does not hang on the fitted exponent.

    $ python -m bench.learning_curve --logs=results/reader_all/log.jsonl,results/reader_pages/log.jsonl \
        --target=0.02 --now=0.1079 --samples_per_sec=40.7 --budget_min=6.4

`now` is the SER to be brought down (the shipped reader's whole clean test, results/generalize.md); the
fit's exponent is applied to it, since the val evals (256 images) are a noisy, slightly easier copy.
"""

import json
import math

import numpy as np

# -----------------------------------------------------------------------------
logs = 'results/reader_all/log.jsonl,results/reader_pages/log.jsonl'  # runs in the order they ran
target = 0.02            # the SER wanted
now = None               # the SER measured now (default: the last eval's val_ser)
samples_per_sec = 40.7   # the idle 2-core CPU's training rate (results/generalize.md)
budget_min = None        # CPU minutes the budget has left, to compare with
skip = 1                 # evals left out at the start of each run (the first eval is the previous run's weights)
# -----------------------------------------------------------------------------


def load(paths):
    """train.py logs of consecutive runs -> (cumulative samples, val SER) at each eval after the first `skip`."""
    xs, ys, offset = [], [], 0
    for path in paths:
        rows = [json.loads(line) for line in open(path)]
        rows = [r for r in rows if r.get('val_ser') is not None and r.get('samples_seen') is not None]
        for r in rows[skip:]:
            xs.append(offset + r['samples_seen'])
            ys.append(r['val_ser'])
        offset += max(r['samples_seen'] for r in rows)
    return np.array(xs, float), np.array(ys, float)


def fit(xs, ys):
    """least squares of log SER on log samples -> (alpha, a): SER = a * samples^-alpha."""
    slope, intercept = np.polyfit(np.log(xs), np.log(ys), 1)
    return -slope, math.exp(intercept)


def needed(n_now, ser_now, target, alpha):
    """samples seen in all to bring ser_now (after n_now samples) down to target, at exponent alpha."""
    return n_now * (ser_now / target) ** (1 / alpha)


def main():
    xs, ys = load([p for p in logs.split(',') if p])
    if len(xs) < 3:
        raise SystemExit('learning_curve: fewer than 3 evals in the logs, nothing to fit')
    alpha, a = fit(xs, ys)
    n_now, ser_now = xs[-1], (now if now is not None else ys[-1])
    print(f'{len(xs)} evals, {xs[0]:.0f} to {xs[-1]:.0f} samples: val SER {ys[0]:.2%} -> {ys[-1]:.2%}; '
          f'fit SER = {a:.3g} * samples^-{alpha:.3f}')
    for name, al in (('fitted', alpha), ('alpha = 1 (bound)', 1.0)):
        if al <= 0:
            print(f'{name}: the SER does not fall with samples; no estimate')
            continue
        more = needed(n_now, ser_now, target, al) - n_now
        hours = more / samples_per_sec / 3600
        print(f'{name}: {ser_now:.2%} -> {target:.2%} takes {more:,.0f} more samples = {hours:.1f} h at {samples_per_sec} samples/s'
              + (f' ({hours * 60 / budget_min:.0f}x the {budget_min} min left)' if budget_min else ''))


if __name__ == '__main__':
    exec(open('configurator.py').read())
    main()
