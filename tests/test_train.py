"""tests/test_train.py: configurator.py and train.py, end to end on CPU.

train.py is a script (nanoGPT style), so most tests run it in a subprocess on the `tiny_corpus`
fixture with config/tiny_test.py (a 1-layer, d_model 32 decoder on 32 px cnn_tiny features,
4 iterations of 4 images, evals at 0, 2 and 4): each run takes seconds. The training runs are
module fixtures shared by several tests:

    run_full      4 iterations in one go                                  (the reference)
    run_resumed   stopped by max_time_minutes after 1 iteration (mid-epoch, off the eval
                  grid), then init_from=resume to 4                       (must equal run_full)
    DDP           2 gloo processes under torchrun, same global batch      (must equal run_full)
    run_accum4    1 process x 4 micro-steps; DDP 2 x 2 micro-steps          (must equal run_accum4)

and the paths a user reaches through train.py: distillation from a teacher run, QLoRA, and
the quick start preparing its own corpus (config/*.py: tests/test_config.py). The numbers a run reports (log.jsonl,
final_eval.json) are recomputed from its checkpoints (rescore).
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ['config/tiny_test.py', '--warmup_frac=0.25']  # 1 warmup iteration, then cosine decay over 1..4
LOG_KEYS = {'iter', 'train_loss', 'val_loss', 'val_ser', 'val_cer', 'val_seq_acc', 'lr', 'samples_per_sec',
            'mfu', 'peak_mem_mb', 'elapsed_s'}


def train(*args, torchrun=False, check=True, timeout=300):
    """Run train.py with config/tiny_test.py and `args`; returns the CompletedProcess."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONHASHSEED='0')
    env.pop('RANK', None)
    launcher = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2'] if torchrun \
        else [sys.executable]
    p = subprocess.run(launcher + ['train.py', *COMMON, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=timeout)
    if check:
        assert p.returncode == 0, f"train.py failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def read_log(out_dir):
    with open(os.path.join(out_dir, 'log.jsonl')) as f:
        return [json.loads(line) for line in f]


def iter_lines(stdout):
    """{iteration: (loss, lr)} from the one-line-per-iteration output."""
    return {int(m[1]): (float(m[2]), float(m[3])) for m in re.finditer(r'^iter (\d+): loss ([\d.]+), lr ([\d.e+-]+),',
                                                                         stdout, re.M)}


def final_data_dir(out_dir):
    with open(os.path.join(out_dir, 'ckpt_last', 'config.json')) as f:
        return json.load(f)['train_config']['data_dir']


def weights(ckpt_dir):
    from safetensors.torch import load_file
    return load_file(os.path.join(ckpt_dir, 'model.safetensors'))


def rescore(ckpt_dir, data_dir, split, n_decode):
    """(loss, scores) that train.py reports for `split`, recomputed here from the checkpoint alone: the
    same images (data.eval_batches with the run's seed and sizes), greedy (and CTC) decoding, one thread
    like the run's, evaluation.score_rows. The numbers in log.jsonl / final_eval.json must equal these."""
    from contextlib import nullcontext
    import data
    from training import evaluation
    from training.checkpoint import load_model
    model, meta = load_model(ckpt_dir)
    tc, ma = meta['train_config'], meta['model_args']
    tok = data.Tokenizer(os.path.join(os.path.dirname(ckpt_dir), 'tokenizer.model'))
    ds = data.OMRDataset(data_dir, split, tokenizer=tok, img_height=ma['img_height'], max_width=tc['max_width'],
                         max_len=ma['max_seq_len'])
    loss_b, decode_b = data.eval_batches(len(ds), tc['batch_size'], tc['eval_iters'], n_decode, tc['seed'])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loss, scores, _ = evaluation.evaluate(model, ds, loss_b, decode_b, data.Collate(tok.pad_id, tok.bos_id, tok.eos_id),
                                              tok, nullcontext(), 'cpu', ma['max_seq_len'] - 1)
    finally:
        torch.set_num_threads(threads)
    return loss, scores


@pytest.fixture(scope='module')
def run_full(tiny_corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('full'))
    p = train(f'--data_dir={tiny_corpus}', f'--out_dir={out}')
    return out, p.stdout


# the CPU reader's levers: joint CTC/attention on a height-collapsed cnn_line, label smoothing, a
# tokenizer of the run's own, the decoded-image cache (in a copy of the corpus: it writes cache/ there)
RECIPE = ['--backbone=cnn_line', '--collapse_height=True', '--ctc_weight=0.3', '--label_smoothing=0.1',
          '--tokenizer_vocab=320', '--cache_images=True']


@pytest.fixture(scope='module')
def recipe_corpus(tiny_corpus, tmp_path_factory):
    d = str(tmp_path_factory.mktemp('recipe') / 'corpus')
    shutil.copytree(tiny_corpus, d)
    return d


@pytest.fixture(scope='module')
def run_recipe(recipe_corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('recipe_full'))
    p = train(f'--data_dir={recipe_corpus}', f'--out_dir={out}', *RECIPE)
    return out, p.stdout


@pytest.fixture(scope='module')
def run_resumed(tiny_corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('resumed'))
    # a time limit far below one iteration: it stops cleanly after iteration 0 (eval + ckpt_last at 1)
    first = train(f'--data_dir={tiny_corpus}', f'--out_dir={out}', '--max_time_minutes=0.0001')
    second = train(f'--data_dir={tiny_corpus}', f'--out_dir={out}', '--init_from=resume')
    return out, first.stdout, second.stdout


@pytest.mark.parametrize('argv, needle', [
    (['--d_modle=64'], "unknown config key 'd_modle' on the command line; did you mean d_model?"),
    (['--data_dir=/nonexistent/quick'], "create it with: python data/m21/prepare.py --out_dir=/nonexistent/quick"),
    (['--init_from=resume', '--data_dir=__DATA__'], "no checkpoint at"),
])
def test_bad_input_is_one_line(argv, needle, tiny_corpus, tmp_path):
    """Typos, missing data, nothing to resume: one line on stderr, exit code 1, no traceback."""
    p = train(f'--out_dir={tmp_path}/run', *[a.replace('__DATA__', tiny_corpus) for a in argv], check=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1, p.stderr
    assert lines[0].startswith('error: ') and needle in lines[0], lines[0]


# -----------------------------------------------------------------------------
# train.py

def test_outputs(run_full):
    out, stdout = run_full
    log = read_log(out)
    assert [r['iter'] for r in log] == [0, 2, 4]
    for r in log:
        assert LOG_KEYS <= set(r), LOG_KEYS - set(r)
        assert math.isfinite(r['val_loss']) and 0 <= r['val_seq_acc'] <= 1
    assert log[0]['train_loss'] is None and all(r['train_loss'] > 0 for r in log[1:])
    assert os.path.getsize(os.path.join(out, 'loss.png')) > 1000
    # the lr schedule: 1 warmup iteration at lr/2, then cosine from 1e-3 to 1e-4 over iterations 1..4
    lrs = [lr for _, (_, lr) in sorted(iter_lines(stdout).items())]
    cos = lambda r: 1e-4 + 0.5 * (1 + math.cos(math.pi * r)) * (1e-3 - 1e-4)
    assert lrs == pytest.approx([5e-4, cos(0), cos(1 / 3), cos(2 / 3)], rel=1e-2)
    # checkpoints: complete, loadable, nothing half-written (*.tmp-*, *.old-*) left behind
    assert sorted(os.listdir(out)) == ['ckpt_best', 'ckpt_last', 'final_eval.json', 'log.jsonl', 'loss.png',
                                       'tokenizer.model', 'tokenizer.vocab']
    from training.checkpoint import load_checkpoint_state, load_model
    model, meta = load_model(os.path.join(out, 'ckpt_last'))
    assert meta['iter_num'] == 4 and meta['train_config']['batch_size'] == 2 and meta['lora'] is None
    assert load_checkpoint_state(os.path.join(out, 'ckpt_last'))['iter_num'] == 4
    with open(os.path.join(out, 'final_eval.json')) as f:
        final = json.load(f)
    assert final['split'] == 'test' and final['n_samples'] == 2 and final['weights'] == 'ckpt_best'
    assert final['weights_iter'] == min(log, key=lambda r: r['val_loss'])['iter']
    # the numbers are those of the weights they name: the last eval's from ckpt_last (val), the test's
    # from ckpt_best, recomputed here from the checkpoint alone
    loss, scores = rescore(os.path.join(out, 'ckpt_last'), final_data_dir(out), 'val', 2)
    assert (log[-1]['val_ser'], log[-1]['val_cer'], log[-1]['val_seq_acc']) == (scores['ser'], scores['cer'], scores['seq_acc'])
    assert log[-1]['val_loss'] == pytest.approx(loss, rel=1e-5)
    loss, scores = rescore(os.path.join(out, 'ckpt_best'), final_data_dir(out), 'test', final['n_samples'])
    assert (final['ser'], final['cer'], final['seq_acc']) == (scores['ser'], scores['cer'], scores['seq_acc'])
    assert final['test_loss'] == pytest.approx(loss, rel=1e-5)


def test_time_limit_stop_and_resume_reproduce_the_uninterrupted_run(run_full, run_resumed):
    full, full_stdout = run_full
    resumed, first_stdout, second_stdout = run_resumed
    # the first process stopped on the clock after one iteration, the second carried on from there
    assert sorted(iter_lines(first_stdout)) == [0] and 'max_time_minutes=0.0001 reached at iter 1' in first_stdout
    assert sorted(iter_lines(second_stdout)) == [1, 2, 3]
    # the same per-iteration losses and learning rates...
    a, b = iter_lines(full_stdout), {**iter_lines(first_stdout), **iter_lines(second_stdout)}
    assert a == b
    # ... the same evals (the stop added one at iteration 1)...
    la, lb = read_log(full), read_log(resumed)
    assert [r['iter'] for r in lb] == [0, 1, 2, 4]
    lb = [r for r in lb if r['iter'] != 1]
    for k in ('val_loss', 'val_cer', 'lr'):
        assert [r[k] for r in la] == pytest.approx([r[k] for r in lb], abs=1e-6), k
    assert la[2]['train_loss'] == pytest.approx(lb[2]['train_loss'], abs=1e-6)
    # ... and bit-identical final weights
    wa, wb = weights(os.path.join(full, 'ckpt_last')), weights(os.path.join(resumed, 'ckpt_last'))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_ddp_two_processes_match_one(run_full, tiny_corpus, tmp_path):
    """2 gloo processes x 1 accumulation step = 1 process x 2 steps: the same images per optimizer
    step, so the same losses and the same weights (up to float summation order)."""
    full, full_stdout = run_full
    p = train(f'--data_dir={tiny_corpus}', f'--out_dir={tmp_path}', torchrun=True)
    assert '4 images per iteration: 2 process(es) x batch_size 2 x 1 accumulation step(s)' in p.stdout
    single, ddp = iter_lines(full_stdout), iter_lines(p.stdout)
    assert sorted(ddp) == [0, 1, 2, 3]
    for it in single:
        assert ddp[it][0] == pytest.approx(single[it][0], abs=2e-4)  # printed with 4 decimals
    for ra, rb in zip(read_log(full), read_log(str(tmp_path))):
        assert rb['train_loss'] == pytest.approx(ra['train_loss'], abs=1e-5)
    wa, wb = weights(os.path.join(full, 'ckpt_last')), weights(os.path.join(tmp_path, 'ckpt_last'))
    # parameters only: BatchNorm running statistics legitimately differ (each process updates them with
    # its own micro-batch, and DDP broadcasts rank 0's buffers); they take no part in training
    params = [k for k in wa if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))]
    for k in params:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.fixture(scope='module')
def run_accum4(tiny_corpus, tmp_path_factory):
    """One process, 4 micro-steps of 2 images per optimizer step."""
    out = str(tmp_path_factory.mktemp('accum4'))
    p = train(f'--data_dir={tiny_corpus}', f'--out_dir={out}', '--gradient_accumulation_steps=4')
    return out, p.stdout


def test_ddp_with_accumulation_matches_one_process(run_accum4, tiny_corpus, tmp_path):
    """2 gloo processes x 2 micro-steps = 1 process x 4: under DDP the gradients are all-reduced on the
    last micro-step only (step.py sets require_backward_grad_sync), after each process has summed its
    own two; the optimizer step must see the same gradient, so the losses and weights are the same."""
    single_out, single_stdout = run_accum4
    assert '8 images per iteration: 1 process(es) x batch_size 2 x 4 accumulation step(s)' in single_stdout
    p = train(f'--data_dir={tiny_corpus}', f'--out_dir={tmp_path}', '--gradient_accumulation_steps=4', torchrun=True)
    assert '8 images per iteration: 2 process(es) x batch_size 2 x 2 accumulation step(s)' in p.stdout
    single, ddp = iter_lines(single_stdout), iter_lines(p.stdout)
    assert sorted(ddp) == sorted(single) == [0, 1, 2, 3]
    for it in single:
        assert ddp[it] == pytest.approx(single[it], abs=2e-4)  # (loss, lr), printed with 4 decimals
    for ra, rb in zip(read_log(single_out), read_log(str(tmp_path))):
        assert (ra['iter'], ra['samples_seen']) == (rb['iter'], rb['samples_seen'])
        if ra['train_loss'] is not None:
            assert rb['train_loss'] == pytest.approx(ra['train_loss'], abs=1e-5)
    wa, wb = weights(os.path.join(single_out, 'ckpt_last')), weights(os.path.join(tmp_path, 'ckpt_last'))
    for k in [k for k in wa if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))]:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5, msg=k)


def test_ddp_resplits_an_accumulation_that_does_not_divide(run_full, tiny_corpus, tmp_path):
    """The card's `torchrun --nproc_per_node=8 train.py config/deit_small.py` with the seed's 8 x 4: an
    accumulation the processes cannot share is re-split into micro-batches of the same global batch.
    Here 2 processes and 4 x 1 become 2 x 2 (1 step each): the same run as 1 process doing 2 x 2."""
    full, full_stdout = run_full
    p = train(f'--data_dir={tiny_corpus}', f'--out_dir={tmp_path}/a', '--batch_size=4',
              '--gradient_accumulation_steps=1', torchrun=True)
    assert 'running batch_size=2 x 2 accumulation steps instead (the same 4 images per step)' in p.stdout
    single, ddp = iter_lines(full_stdout), iter_lines(p.stdout)
    assert sorted(ddp) == sorted(single)
    for it in single:
        assert ddp[it][0] == pytest.approx(single[it][0], abs=2e-4)
    # a global batch the processes cannot share either: one line, exit 1
    p = train(f'--data_dir={tiny_corpus}', f'--out_dir={tmp_path}/b', '--batch_size=3',
              '--gradient_accumulation_steps=1', torchrun=True, check=False)
    assert p.returncode != 0 and 'processes cannot share batch_size 3 x gradient_accumulation_steps 1' in p.stderr


def test_resume_with_another_model_is_refused(run_full, tiny_corpus, tmp_path):
    out = str(tmp_path / 'run')
    shutil.copytree(run_full[0], out)
    p = train(f'--data_dir={tiny_corpus}', f'--out_dir={out}', '--init_from=resume', '--n_layer=2', check=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1, p.stderr
    assert "was trained with n_layer=1 but the config says 2" in lines[0]


# -----------------------------------------------------------------------------
# the same guarantees with the CPU reader's recipe (CTC loss, own tokenizer, image cache)

def test_recipe_outputs(run_recipe):
    out, stdout = run_recipe
    log = read_log(out)
    assert all(r['val_ser_ctc'] is not None and r['samples_seen'] == 4 * r['iter'] for r in log)
    assert 'cached' in stdout and 'CTC SER' in stdout
    from data import Tokenizer
    assert Tokenizer(os.path.join(out, 'tokenizer.model')).vocab_size <= 320  # its own, not the corpus' 789
    with open(os.path.join(out, 'final_eval.json')) as f:
        final = json.load(f)
    assert sum(f['n'] for f in final['by_font'].values()) == final['n_samples']
    _, scores = rescore(os.path.join(out, 'ckpt_best'), final_data_dir(out), 'test', final['n_samples'])
    assert (final['ser'], final['ctc']['ser'], final['ctc']['seq_acc']) == (scores['ser'], scores['ctc']['ser'],
                                                                            scores['ctc']['seq_acc'])


def test_recipe_checkpoint_names_the_better_decoding(run_recipe):
    # ckpt_last's config.json 'decode' (what sample.py --decode=auto follows) is the decoding that
    # scored the lower val SER at the eval that wrote it: the last line of log.jsonl
    out, _ = run_recipe
    last = read_log(out)[-1]
    with open(os.path.join(out, 'ckpt_last', 'config.json')) as f:
        meta = json.load(f)
    assert meta['iter_num'] == last['iter']
    assert meta['decode'] == ('ctc' if last['val_ser_ctc'] < last['val_ser'] else 'attention')


def test_recipe_resume_reproduces_the_uninterrupted_run(run_recipe, recipe_corpus, tmp_path):
    full, full_stdout = run_recipe
    out = str(tmp_path / 'run')
    first = train(f'--data_dir={recipe_corpus}', f'--out_dir={out}', *RECIPE, '--max_time_minutes=0.0001')
    second = train(f'--data_dir={recipe_corpus}', f'--out_dir={out}', *RECIPE, '--init_from=resume')
    assert iter_lines(full_stdout) == {**iter_lines(first.stdout), **iter_lines(second.stdout)}
    wa, wb = weights(os.path.join(full, 'ckpt_last')), weights(os.path.join(out, 'ckpt_last'))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_recipe_ddp_two_processes_match_one(run_recipe, recipe_corpus, tmp_path):
    full, full_stdout = run_recipe
    p = train(f'--data_dir={recipe_corpus}', f'--out_dir={tmp_path}', *RECIPE, torchrun=True)
    single, ddp = iter_lines(full_stdout), iter_lines(p.stdout)
    assert sorted(ddp) == sorted(single)
    for it in single:
        assert ddp[it][0] == pytest.approx(single[it][0], abs=2e-4)
    wa, wb = weights(os.path.join(full, 'ckpt_last')), weights(os.path.join(tmp_path, 'ckpt_last'))
    for k in [k for k in wa if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))]:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5, msg=k)


def test_holdout_font_run_scores_it_apart(recipe_corpus, tmp_path):
    from data import load_split
    fonts = list(load_split(recipe_corpus, 'test')['font'])
    font = max(set(fonts), key=fonts.count)
    p = train(f'--data_dir={recipe_corpus}', f'--out_dir={tmp_path}', *RECIPE, f'--holdout_font={font}',
              '--max_iters=1', '--eval_test_samples=-1', '--augment=True', '--augment_shape=True')
    assert f'held-out font {font}' in p.stdout and 'unseen / seen SER, attention' in p.stdout
    with open(os.path.join(tmp_path, 'final_eval.json')) as f:
        final = json.load(f)
    assert final['holdout_font'] == font and final['holdout']['holdout_font']['n'] == fonts.count(font)
    assert final['holdout'].get('seen_fonts', {'n': 0})['n'] == len(fonts) - fonts.count(font)
    # bench/holdout_report.py prints the run's own unseen/seen ratio
    out = subprocess.run([sys.executable, '-m', 'bench.holdout_report', str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    h = final['holdout']
    assert f"**{h['holdout_font']['ser'] / h['seen_fonts']['ser']:.2f}×**" in out.splitlines()[2]
    # bench/holdout_errors.py splits the same decodings' edits by symbol kind: they add up to the SER
    out = subprocess.run([sys.executable, '-m', 'bench.holdout_errors', str(tmp_path),
                          recipe_corpus], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    last = out.strip().splitlines()[-1]
    assert f"(SER {100 * h['seen_fonts']['ser']:.1f}%)" in last and f"(SER {100 * h['holdout_font']['ser']:.1f}%)" in last


def test_errors_by_kind_add_up_to_the_edit_distance():
    from bench import holdout_errors as errors
    from core import metrics
    ref = metrics.abc_symbols('M:6/8\nL:1/8\nK:D\nA|dfa agf|gfe dcB|]')
    for hyp_text, want in (('M:6/8\nL:1/8\nK:D\nA|dfa agf|gfe dcB|]', {}),
                           ('M:3/4\nL:1/8\nK:D\nA|dfa agf|gfe dcB|]', {'M:': 1}),
                           ('M:6/8\nL:1/8\nK:G\nG6 A|dfa agf|gfe dcB|]', {'K:': 1, 'note (added, 1st bar)': 1, 'space': 1}),
                           ('M:6/8\nL:1/8\nK:D\nA|dfa agf|g^fe dc2B|]', {'note (accidental)': 1, 'note (duration)': 1}),
                           ('M:6/8\nL:1/8\nK:D\nA|dga agf|gfe dc|]', {'note (pitch)': 1, 'note (missed)': 1}),
                           ('M:6/8\nL:1/8\nK:D\nA|dfa agf|gfe dcBB|]', {'note (added)': 1})):
        hyp = metrics.abc_symbols(hyp_text)
        got = errors.edits_by_kind(hyp, ref)
        assert dict(got) == want and sum(got.values()) == metrics.levenshtein(hyp, ref)
    rng = np.random.default_rng(0)
    for _ in range(50):  # random edits: the kinds always sum to the distance
        hyp = [s for s in ref if rng.random() > 0.2] + list(rng.choice(ref, size=int(rng.integers(0, 4))))
        assert sum(errors.edits_by_kind(hyp, ref).values()) == metrics.levenshtein(hyp, ref)


def test_max_samples_sets_max_iters(tiny_corpus, tmp_path):
    """--max_samples gives a run that many training images whatever its batch size (study.py uses it)."""
    out = str(tmp_path / 'run')
    p = train(f'--data_dir={tiny_corpus}', f'--out_dir={out}', '--max_samples=6', '--eval_interval=100',
              '--eval_test_samples=1')
    assert ', max_iters 2 (' in p.stdout  # ceil(6 / (2 x 2 images per step))
    assert [r['iter'] for r in read_log(out)] == [0, 2]


def test_fit_iters_arithmetic():
    """preempt.fit_iters: the steps left at the measured speed, evals included, 5% to spare."""
    from training import preempt
    assert preempt.fit_iters(20, 1100, 0.5, 5.0, 300, 1000.0) == 1100  # 945 s buy 1,829 steps: all fit
    assert preempt.fit_iters(20, 1100, 1.0, 10.0, 100, 500.0) == 20 + 422  # (475 - 10) / (1 + 0.1)
    assert preempt.fit_iters(20, 1100, 1.0, 10.0, 100, -5.0) == 21  # the clock has run out: one more step


def test_fit_to_time_ends_the_schedule_and_resume_keeps_it(tiny_corpus, tmp_path):
    """A run that cannot reach max_iters in max_time_minutes shortens itself after 20 steps, so its lr
    still decays to min_lr instead of being cut off at the peak; a resume keeps the shortened schedule."""
    out = str(tmp_path / 'run')
    args = [f'--data_dir={tiny_corpus}', f'--out_dir={out}', '--max_iters=100000', '--warmup_frac=0',
            '--eval_interval=1000000', '--eval_test_samples=1', '--fit_to_time=True']
    p = train(*args, '--max_time_minutes=0.2')
    fit = int(re.search(r'^fit_to_time: .* max_iters (\d+),', p.stdout, re.M)[1])
    lines = iter_lines(p.stdout)
    assert 20 < fit < 100000 and max(lines) < fit
    lr_end = lines[max(lines)][1]
    assert lr_end < 1e-4 + 0.05 * (1e-3 - 1e-4), lr_end  # tiny_test: learning_rate 1e-3, min_lr 1e-4
    train(*args, '--init_from=resume', '--max_time_minutes=0')  # no clock now: it still ends at the fit
    with open(os.path.join(out, 'final_eval.json')) as f:
        assert json.load(f)['iters'] == fit


# -----------------------------------------------------------------------------
# the efficiency plug-ins through train.py: distillation from a teacher run, QLoRA

def test_distillation_through_train_py(run_full, tiny_corpus, tmp_path):
    """--teacher_dir: the 4-iteration run teaches a fresh student of the same seed (so the two start
    from the same weights, 4 steps apart). distill_alpha=1: the KD term has no weight, and the student's
    run is run_full's, losses and weights. distill_alpha=0: the loss is the KD term alone,
    T^2 KL(teacher || student) -- small and positive at iteration 0 where the CE is ~6.5 -- and it alone
    moves the weights, elsewhere than the labels do."""
    teacher, full_stdout = run_full
    full = iter_lines(full_stdout)
    a = train(f'--data_dir={tiny_corpus}', f'--out_dir={tmp_path}/a', f'--teacher_dir={teacher}', '--distill_alpha=1.0')
    la = iter_lines(a.stdout)
    assert sorted(la) == sorted(full)
    for it in full:
        assert la[it] == pytest.approx(full[it], abs=1e-4)
    wf, wa = weights(os.path.join(teacher, 'ckpt_last')), weights(os.path.join(tmp_path, 'a', 'ckpt_last'))
    for k in wf:
        torch.testing.assert_close(wa[k], wf[k], rtol=1e-5, atol=1e-6, msg=k)
    b = train(f'--data_dir={tiny_corpus}', f'--out_dir={tmp_path}/b', f'--teacher_dir={teacher}', '--distill_alpha=0.0',
              '--distill_T=2.0')
    lb = iter_lines(b.stdout)
    assert full[0][0] > 5 and 0 < lb[0][0] < 0.05, (lb[0], full[0])  # measured 0.0013 against CE 6.4656
    wb = weights(os.path.join(tmp_path, 'b', 'ckpt_last'))
    diff = max((wb[k] - wf[k]).abs().max().item() for k in wf if wf[k].is_floating_point())
    assert diff > 1e-2, diff  # measured 0.119


def test_qlora_through_train_py(tiny_corpus, tmp_path):
    """--quant_backbone=nf4 with --lora_rank (config/qlora_r8.py's keys on the tiny model): the backbone's
    4-bit weights are frozen and come out bit-identical to those train.py quantized at the start (the
    same model rebuilt here from the seed); its other weights (BatchNorm) are frozen too; the adapters
    and the decoder move."""
    from training.checkpoint import read_meta
    from model import build_model
    out = str(tmp_path / 'run')
    p = train(f'--data_dir={tiny_corpus}', f'--out_dir={out}', '--quant_backbone=nf4', '--nf4_double_quant=True',
              '--lora_rank=4', '--lora_alpha=8.0', '--learning_rate=1e-2')
    n_nf4 = int(re.search(r'^NF4: quantized (\d+) backbone modules', p.stdout, re.M)[1])
    n_lora = int(re.search(r'^LoRA: rank 4 adapters on (\d+) modules', p.stdout, re.M)[1])
    assert n_lora >= n_nf4 > 0  # adapters on every Linear/Conv2d; NF4 on those of >= 4096 weights
    meta = read_meta(os.path.join(out, 'ckpt_last'))
    assert meta['iter_num'] == 4 and meta['quant'] == dict(backbone='nf4', double_quant=True)
    torch.manual_seed(meta['train_config']['seed'])  # train.py seeds, then builds: the run's initial weights
    start = build_model(meta['model_args'], meta['lora'], meta['quant']).state_dict()
    end = weights(os.path.join(out, 'ckpt_last'))
    assert set(end) == set(start) - {'lm_head.weight'}  # tied to the token embedding: saved once
    nf4 = [k for k in end if k.startswith('backbone.') and '.weight_' in k]  # packed codes, absmax constants
    assert len([k for k in nf4 if k.endswith('weight_packed')]) == n_nf4
    assert all(end[k].dtype == torch.uint8 for k in nf4 if k.endswith('weight_packed'))
    assert all(torch.equal(end[k], start[k]) for k in nf4)
    adapters = [k for k in end if k.endswith(('lora_A', 'lora_B'))]
    assert len(adapters) == 2 * n_lora
    assert all(not start[k].any() for k in adapters if k.endswith('lora_B'))  # LoRA's B starts at zero ...
    assert all(end[k].abs().max() > 1e-4 for k in adapters if k.endswith('lora_B'))  # ... and has learned
    frozen = [k for k in end if k.startswith('backbone.') and k not in nf4 and k not in adapters]
    assert frozen and all(torch.equal(end[k], start[k]) for k in frozen)  # BatchNorm: eval mode, no grad
    decoder = [k for k in end if not k.startswith('backbone.') and end[k].is_floating_point()]
    assert sum(not torch.equal(end[k], start[k]) for k in decoder) >= len(decoder) // 2


# -----------------------------------------------------------------------------
# the quick start's first command on a clean clone: no corpus yet

def test_quickstart_prepares_its_missing_corpus(tmp_path):
    """config/quickstart.py with its data_dir empty (made by hand, or left by an interrupted prepare; a
    missing one is the same case): train.py builds the corpus first (data.prepare_missing runs
    data/m21/prepare.py with the config's prepare_args), then trains on it. Here 6 tunes and a 2-step
    run of a small model; the rest is the quick start's recipe (own BPE, image cache, CTC head)."""
    import data
    corpus, out = tmp_path / 'm21' / 'quick', tmp_path / 'out'
    corpus.mkdir(parents=True)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONHASHSEED='0')
    env.pop('RANK', None)
    p = subprocess.run([sys.executable, 'train.py', 'config/quickstart.py', f'--data_dir={corpus}', f'--out_dir={out}',
                        '--prepare_args=--max_tunes=6 --num_workers=2', '--max_iters=2', '--batch_size=2',
                        '--eval_interval=2', '--eval_iters=1', '--eval_decode_samples=1', '--eval_test_samples=1',
                        '--max_time_minutes=0', '--cpu_threads=1', '--n_layer=1', '--n_head=2', '--d_model=32',
                        '--d_ff=64'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert f"{corpus} is missing, preparing it: " in p.stdout
    assert f"prepare.py --out_dir={corpus} --max_tunes=6 --num_workers=2" in p.stdout
    n = {s: len(data.load_split(str(corpus), s)) for s in ('train', 'val', 'test')}
    assert all(n.values()), n
    assert f"data: {corpus}, {n['train']} train / {n['val']} val / {n['test']} test images" in p.stdout
    with open(out / 'final_eval.json') as f:
        final = json.load(f)
    assert final['iters'] == 2 and final['n_samples'] == 1 and final['ctc'] is not None
