"""Tests for study.py: the sweep + report on the tiny corpus (2 backbones, 1 iteration each), checked
number by number against the runs' own final_eval.json and log.jsonl; plus its small helpers."""

import json
import os
import subprocess
import sys

import pytest

from bench import study
from training import runlog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKBONES = ['cnn_tiny', 'efficientnet_b0']  # our tiny CNN and one real encoder of the study


def cli(*args, check=True):
    p = subprocess.run([sys.executable, '-m', 'bench.study', *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"study.py {' '.join(args)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope='module')
def sweep(tiny_corpus, tmp_path_factory):
    """`study.py run ... --report`: config/<backbone>.py (if any) + config/tiny_test.py, 4 samples each."""
    base = tmp_path_factory.mktemp('study')
    out_root, results = str(base / 'runs'), str(base / 'results')
    args = [f"--backbones={','.join(BACKBONES)}", '--max_samples=4', f'--out_root={out_root}',
            '--configs=config/tiny_test.py',
            # passed through to train.py for every run: the corpus, short labels, an eval per iteration
            f'--data_dir={tiny_corpus}', '--max_seq_len=72', '--eval_interval=1', '--eval_decode_samples=1']
    p = cli('run', *args, '--report', f'--results_dir={results}', '--max_new_tokens=16')
    return out_root, results, p.stdout, args


def read(path):
    with open(path) as f:
        return json.load(f)


def test_report_numbers_come_from_the_runs(sweep):
    out_root, results, stdout, _ = sweep
    report = read(os.path.join(results, 'backbone_study.json'))
    rows = {r['backbone']: r for r in report['rows']}
    assert sorted(rows) == sorted(BACKBONES)
    md = open(os.path.join(results, 'backbone_study.md')).read()
    for bb in BACKBONES:
        run = os.path.join(out_root, bb)
        final = read(os.path.join(run, 'final_eval.json'))
        with open(os.path.join(run, 'log.jsonl')) as f:
            log = [json.loads(line) for line in f]
        r = rows[bb]
        assert r['split'] == 'test'
        for ours, theirs in [('ser', 'ser'), ('cer', 'cer'), ('seq_acc', 'seq_acc'), ('test_loss', 'test_loss'),
                             ('params', 'n_params'), ('samples_per_sec', 'samples_per_sec'), ('mfu', 'mfu'),
                             ('peak_mem_mb', 'peak_mem_mb'), ('wall_s', 'train_time_s'), ('iters', 'iters')]:
            assert r[ours] == final[theirs], (bb, ours)
        assert r['best_val_loss'] == min(e['val_loss'] for e in log)
        assert [e['iter'] for e in log] == [0, 1]
        # the same number of training samples for every backbone: 1 iteration x 2 images x 2 accumulation
        assert r['samples_seen'] == 4 == final['iters'] * 4
        # and the markdown table shows those very numbers
        line = next(l for l in md.splitlines() if l.startswith(f'| {bb} |'))
        for cell in (f"{final['n_params'] / 1e6:.2f}", f"{100 * final['ser']:.2f}%", f"{100 * final['cer']:.2f}%",
                     f"{min(e['val_loss'] for e in log):.4f}", f"{final['samples_per_sec']:.1f}",
                     f"{final['peak_mem_mb']:,.0f}", f"{final['train_time_s'] / 60:.1f}", '| 4 |'):
            assert cell in line, (bb, cell, line)
    assert [r['backbone'] for r in report['rows']] == sorted(BACKBONES, key=lambda b: rows[b]['ser'])
    assert 'Device (from the runs\' final_eval.json): cpu' in md
    # the sweep's record: one recipe, the backbone's own config first where there is one
    rec = read(os.path.join(out_root, 'study.json'))
    assert 'config/efficientnet_b0.py config/tiny_test.py' in rec['runs']['efficientnet_b0']['command']
    assert all(v['max_samples'] == 4 and v['returncode'] == 0 for v in rec['runs'].values())


def test_report_files_and_examples(sweep):
    out_root, results, stdout, _ = sweep
    report = read(os.path.join(results, 'backbone_study.json'))
    for key, path in report['files'].items():
        assert os.path.isfile(path), key
        if path.endswith('.png'):
            assert open(path, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    assert json.loads(stdout.strip().splitlines()[-1])['files'] == report['files']
    n_test = read(os.path.join(out_root, BACKBONES[0], 'final_eval.json'))['n_samples']
    ex = report['examples']
    assert 1 <= len(ex) <= 6
    for e in ex:
        ref_line, hyp_line, marks = e['aligned']
        assert len(ref_line) == len(hyp_line) == len(marks)
        assert isinstance(e['prediction'], str) and e['truth']
    assert n_test >= 1


def test_rerun_skips_finished_runs(sweep):
    out_root, _, _, args = sweep
    before = read(os.path.join(out_root, 'study.json'))
    p = cli('run', *args)  # same command: nothing to redo (a sweep split over several GPU calls resumes)
    assert p.stdout.count('already done with this command') == len(BACKBONES)
    assert read(os.path.join(out_root, 'study.json')) == before


def test_align_symbols():
    ref_l, hyp_l, marks, sub, dele, ins = study.align_symbols(['K:G', 'A', 'B', 'c'], ['K:G', 'A', 'd2', 'c', '|'])
    assert (sub, dele, ins) == (1, 0, 1)
    assert ref_l == 'K:G A B  c  '
    assert hyp_l == 'K:G A d2 c |'
    assert marks == '      ^^   +'
    assert study.align_symbols(['a', 'b'], ['a'])[3:] == (0, 1, 0)
    assert study.wrap_columns(['abcdef', 'ghijkl'], 4) == ['abcd', 'ghij', 'ef', 'kl']


def test_run_mode_and_config_resolution(tmp_path):
    assert runlog.run_mode(dict(lora_rank=0)) == 'full'
    assert runlog.run_mode(dict(lora_rank=0, freeze_backbone=True)) == 'frozen'
    assert runlog.run_mode(dict(lora_rank=16)) == 'lora_r16'
    assert runlog.run_mode(dict(lora_rank=8, quant_backbone='nf4')) == 'qlora_r8'
    a, b = tmp_path / 'a.py', tmp_path / 'b.py'
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        overrides = study.parse_overrides(['--gradient_accumulation_steps=5', "--lora_targets=('backbone.',)"])
        argv = study.train_command('cnn_tiny', 'o/cnn_tiny', 100, 2.5, [str(a), str(b)], overrides)
    finally:
        os.chdir(cwd)
    # train.py turns --max_samples into max_iters itself (tests/test_train.py checks it)
    assert argv[1:] == ['train.py', str(a), str(b), '--backbone=cnn_tiny', '--out_dir=o/cnn_tiny', '--max_samples=100',
                        '--max_time_minutes=2.5', '--gradient_accumulation_steps=5', "--lora_targets=('backbone.',)"]


@pytest.mark.parametrize('args, needle', [
    (['report', '--runs=/nonexistent/*'], 'no train.py run'),
    (['run', '--max_samples=4', '--out_dir=x'], 'set by study.py'),
    (['run', '--max_samples=4', 'stray'], 'use --key=value'),
    (['run', '--max_samples=4', '--configs=config/nope.py'], 'not found'),
])
def test_bad_input_is_one_line(args, needle):
    p = cli(*args, check=False)
    assert p.returncode != 0 and needle in p.stderr and 'Traceback' not in p.stderr
