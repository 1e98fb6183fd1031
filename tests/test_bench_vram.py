"""Tests for bench_vram.py: exact static bytes, the OOM-safe batch search, Pareto fronts, the CPU run."""

import json
import math
import os

import pytest
import torch

import bench_vram as bv
import quant
from bench import vram_report

TINY = bv.CPU_TINY
F32, I64 = 4, 8  # bytes per element


def one_step(mode):
    """cnn_tiny model of `mode` after one real training step, its grads kept."""
    torch.manual_seed(0)
    model = bv.build_model('cnn_tiny', mode, 32, model_args=TINY)
    opt = bv.make_optimizer(model, 'cpu')
    ctx, scaler = bv.amp_context('cpu', 'float32')
    batch = bv.synthetic_batch(2, 32, 64, 8, TINY['vocab_size'], 'cpu')
    bv.train_step(model, opt, scaler, ctx, batch, zero_grad=False)
    return model, opt


def expected_bytes(model):
    """Bytes by hand from shapes and the dtype rules: fp32 params/grads; AdamW keeps exp_avg and
    exp_avg_sq (fp32, param-shaped) and a float32 scalar `step` per trainable tensor; an NF4 weight
    of n elements is ceil(n/2) packed bytes + one fp32 absmax per block of 64."""
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    nf4 = {name: m for name, m in model.named_modules() if isinstance(m, (quant.NF4Linear, quant.NF4Conv2d))}
    buffers = 0
    for name, b in model.named_buffers():
        owner, _, leaf = name.rpartition('.')
        if leaf == 'weight_packed':
            buffers += math.ceil(math.prod(nf4[owner].weight_shape) / 2)
        elif leaf == 'weight_absmax':
            buffers += F32 * math.ceil(math.prod(nf4[owner].weight_shape) / 64)
        elif leaf == 'num_batches_tracked':
            buffers += I64
        else:
            buffers += F32 * math.prod(b.shape)
    return dict(param_bytes=F32 * sum(math.prod(p.shape) for p in params), buffer_bytes=buffers,
                grad_bytes=F32 * sum(math.prod(p.shape) for p in trainable),
                optimizer_bytes=sum(2 * F32 * math.prod(p.shape) + F32 for p in trainable),
                trainable_params=sum(math.prod(p.shape) for p in trainable))


@pytest.mark.parametrize('mode', ['full', 'frozen', 'lora_r4', 'qlora_r8'])
def test_static_breakdown_equals_hand_count(mode):
    model, opt = one_step(mode)
    got = bv.static_breakdown(model, opt, 'cpu')
    want = expected_bytes(model)
    for k, v in want.items():
        assert got[k] == v, (mode, k, got[k], v)
    assert got['static_bytes'] == sum(want[k] for k in ('param_bytes', 'buffer_bytes', 'grad_bytes', 'optimizer_bytes'))
    assert got['optimizer_host_bytes'] == 0  # on CPU every tensor is "on the device"
    # the grads counted were real tensors, not the fallback
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    names = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith('backbone.')]
    if mode == 'full':
        assert got['trainable_params'] == got['total_params']
    elif mode == 'frozen':
        assert names == []
    else:  # adapters are the only trainable thing in the backbone
        assert names and all('lora_A' in n or 'lora_B' in n for n in names)
    if mode == 'qlora_r8':
        n_nf4 = sum(1 for m in model.modules() if isinstance(m, (quant.NF4Linear, quant.NF4Conv2d)))
        assert n_nf4 > 0
        # the 4-bit store makes the whole model far smaller than its fp32 self
        full = bv.static_breakdown(*one_step('full'), 'cpu')
        assert got['param_bytes'] + got['buffer_bytes'] < 0.5 * full['param_bytes']


def test_static_breakdown_needs_a_step():
    model = bv.build_model('cnn_tiny', 'full', 32, model_args=TINY)
    with pytest.raises(RuntimeError, match='no state yet'):
        bv.static_breakdown(model, bv.make_optimizer(model, 'cpu'), 'cpu')


def fake_step(max_ok, per_sample=10, static=1000):
    """A step function whose 'GPU' runs out of memory above max_ok; returns its peak bytes."""
    calls = []

    def step_at(b):
        calls.append(b)
        if b > max_ok:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (simulated at batch {b})")
        return static + per_sample * b
    return step_at, calls


@pytest.mark.parametrize('start', [1, 5, 37, 38, 100, 4096])
def test_batch_search_catches_oom(start):
    step_at, calls = fake_step(37)
    best, tried = bv.largest_batch(step_at, budget_bytes=10 ** 12, start=start)
    assert best == 37
    assert tried[37] is True and tried[38] is False
    assert all(tried[b] == (b <= 37) for b in tried)
    assert len(calls) == len(set(calls)) <= 2 * math.ceil(math.log2(4096)) + 2  # no size tried twice


def test_batch_search_budget_and_edges():
    step_at, _ = fake_step(10 ** 6)  # never OOMs: the budget decides (peak = 1000 + 10 b)
    assert bv.largest_batch(step_at, budget_bytes=1000 + 10 * 20, start=3)[0] == 20
    assert bv.largest_batch(step_at, budget_bytes=10 ** 12, start=3, limit=64)[0] == 64
    step_at, _ = fake_step(0)  # even batch 1 runs out of memory
    assert bv.largest_batch(step_at, budget_bytes=10 ** 12, start=8) == (0, {8: False, 4: False, 2: False, 1: False})

    def broken(b):  # other errors are bugs, not out-of-memory: they propagate
        raise RuntimeError("shape mismatch")
    with pytest.raises(RuntimeError, match='shape mismatch'):
        bv.largest_batch(broken, budget_bytes=10 ** 12)


def test_predict_batch_from_two_points():
    # peak = 1000 + 10 b exactly: the budget 1000 + 10 * 57 + 5 fits 57
    assert bv.predict_batch(8, 1080, 16, 1160, 1000 + 575) == 57
    assert bv.predict_batch(8, 1080, 16, 1080, 5000) is None  # no growth: no prediction
    with pytest.raises(ValueError):
        bv.predict_batch(8, 1, 8, 2, 10)


def test_pareto_front():
    pts = [(10, 5.0), (20, 3.0), (15, 6.0), (30, 3.0), (40, 1.0)]
    assert vram_report.pareto_front(pts) == [0, 1, 4]  # less memory and less SER
    assert vram_report.pareto_front(pts, maximize_x=True) == [4]  # more samples/s and less SER: 40 dominates all
    assert vram_report.pareto_front([(3, 2.0), (1, 4.0), (2, 3.0)], maximize_x=True) == [0]
    assert bv.parse_mode('qlora_r8') == (False, 8, 'nf4') and bv.parse_mode('frozen') == (True, 0, None)
    with pytest.raises(ValueError):
        bv.parse_mode('lora_r0')


def test_recommend_uses_only_measured_fits():
    fit = lambda m16, m24: {'16': dict(measured=m16), '24': dict(measured=m24)}
    rows = [dict(backbone='a', mode='full', img_height=224, samples_per_sec=50.0, fit=fit(0, 8)),
            dict(backbone='b', mode='qlora_r8', img_height=224, samples_per_sec=20.0, fit=fit(12, 40)),
            dict(backbone='c', mode='lora_r8', img_height=224, samples_per_sec=90.0, fit=fit(4, 16))]
    runs = [dict(backbone='a', mode='full', ser=0.02), dict(backbone='b', mode='qlora_r8', ser=0.05)]
    recs = vram_report.recommend(rows, runs)
    assert recs['16']['backbone'] == 'b' and recs['16']['batch_size'] == 12 and recs['16']['expected_ser'] == 0.05
    assert recs['24']['backbone'] == 'a' and recs['24']['expected_ser'] == 0.02
    recs = vram_report.recommend(rows, [])  # no SER known: fastest fitting config, said so
    assert recs['16']['backbone'] == 'c' and recs['16']['expected_ser'] is None and recs['16']['ser_note']


def write_fake_run(d, backbone, mode_cfg, ser, peak, speed):
    """A run directory shaped like train.py's (the numbers are test data, not results)."""
    os.makedirs(os.path.join(d, 'ckpt_best'))
    meta = dict(model_args=dict(backbone=backbone, img_height=32),
                train_config=dict(batch_size=2, gradient_accumulation_steps=1, **mode_cfg))
    with open(os.path.join(d, 'ckpt_best', 'config.json'), 'w') as f:
        json.dump(meta, f)
    with open(os.path.join(d, 'log.jsonl'), 'w') as f:
        for it in (0, 10):
            f.write(json.dumps(dict(iter=it, val_loss=3.0 - it / 10, val_ser=ser + 0.1, val_cer=0.5,
                                    samples_per_sec=speed, peak_mem_mb=peak, elapsed_s=it)) + '\n')
    with open(os.path.join(d, 'final_eval.json'), 'w') as f:
        json.dump(dict(ser=ser, cer=ser / 2, seq_acc=0.0, test_loss=2.0, n_params=1000, samples_per_sec=speed,
                       mfu=None, peak_mem_mb=peak, train_time_s=10.0, iters=10, device='cpu'), f)


def test_cpu_run_writes_its_files(tmp_path, capsys):
    runs = tmp_path / 'runs'
    write_fake_run(str(runs / 'r1'), 'cnn_tiny', dict(lora_rank=0), 0.30, 100.0, 5.0)
    write_fake_run(str(runs / 'r2'), 'cnn_tiny', dict(lora_rank=8, quant_backbone='nf4'), 0.40, 60.0, 4.0)
    out = tmp_path / 'results'
    bv.main([f'--results_dir={out}', '--modes=full,qlora_r8', '--batch_sizes=1,2', '--warmup=1', '--iters=1',
             f'--runs={runs}/*'])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith('NO GPU PRESENT')
    report = json.loads(lines[-1])
    with open(out / 'bench_vram_cpu.json') as f:
        assert json.load(f) == report
    assert report['no_gpu'] is True and report['gpu'] is None
    assert [(r['mode'], r['batch_size']) for r in report['rows']] == [('full', 1), ('full', 2), ('qlora_r8', 1), ('qlora_r8', 2)]
    # the static bytes in the report are the exact ones
    model, opt = one_step('full')
    want = expected_bytes(model)
    for r in report['rows'][:2]:
        assert r['param_bytes'] == want['param_bytes'] and r['optimizer_bytes'] == want['optimizer_bytes']
        assert r['peak_bytes'] is None and r['activation_source'].startswith('estimate')
        assert all('measured' not in f and f['predicted_source'].startswith('estimate') for f in r['fit'].values())
    assert all('no GPU' in rec['note'] for rec in report['recommendations'].values())
    # SER of the given runs, read from their final_eval.json, with the mode from their config
    assert sorted((r['name'], r['mode'], r['ser']) for r in report['runs']) == [('r1', 'full', 0.30), ('r2', 'qlora_r8', 0.40)]
    md = (out / 'bench_vram_cpu.md').read_text()
    assert 'No GPU was present' in md and '| cnn_tiny | qlora_r8 | 32 x 128 | 2 |' in md
    for png in ('bench_vram_memory_cpu.png', 'bench_vram_pareto_cpu.png'):
        assert (out / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    # --from_json re-renders a measurement without measuring. Here a GPU record is faked from the CPU
    # one (test data in a tmp dir) to exercise the GPU rendering: measured fits -> a recommendation
    fake = dict(report, device='cuda', gpu='Fake GPU', no_gpu=False)
    for r in fake['rows']:
        r['fit'] = {t: dict(f, measured=7 if r['mode'] == 'qlora_r8' or t != '16' else 0) for t, f in r['fit'].items()}
    with open(tmp_path / 'fake.json', 'w') as f:
        json.dump(fake, f)
    out2 = tmp_path / 'rerendered'
    bv.main([f'--from_json={tmp_path}/fake.json', f'--results_dir={out2}', f'--runs={runs}/*'])
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again['rows'] == fake['rows'] and again['gpu'] == 'Fake GPU'
    recs = again['recommendations']
    assert (recs['16']['mode'], recs['16']['expected_ser'], recs['16']['batch_size']) == ('qlora_r8', 0.40, 7)
    assert (recs['48']['mode'], recs['48']['expected_ser']) == ('full', 0.30)  # both fit: the lower SER wins
    md = (out2 / 'bench_vram_cuda.md').read_text()
    assert '# bench_vram: Fake GPU' in md and '| 16 GB | cnn_tiny | qlora_r8 | 32 | 7 |' in md


def test_bad_input_is_one_line(tmp_path):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, 'bench_vram.py', '--modes=lora_rX', f'--results_dir={tmp_path}'],
                       cwd=root, capture_output=True, text=True)
    assert p.returncode != 0 and p.stderr.strip().startswith('error: unknown mode') and 'Traceback' not in p.stderr
