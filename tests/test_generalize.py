"""tests/test_generalize.py: the pieces of the generalization work (issue 24) that train.py reaches:
fine-tuning from a trained reader (init_weights), held-out source groups, and the per-engraver,
per-source and per-feature breakdown of bench/generalize.py."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from core.metrics import FOLK_SOURCES, source_group

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_source_groups_follow_prepare():
    """every folk collection prepare.py reads is 'folk' (transposed or not); score parts are 'parts'."""
    spec = importlib.util.spec_from_file_location('m21_prepare', os.path.join(ROOT, 'data', 'm21', 'prepare.py'))
    prep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prep)
    assert tuple(prep.ABC_SOURCES) == FOLK_SOURCES
    assert [source_group(s) for s in ('oneills1850', 'transposed:essenFolksong', 'part:bach', 'transposed:bach',
                                      'synth', 'pdmx', None)] == ['folk', 'folk', 'parts', 'parts', 'synth', 'pdmx', None]


def test_holdout_scores_on_a_source_group():
    """holdout_scores splits the rows by source group as it does by font: parts against the rest."""
    from training import evaluation
    ref = 'M:4/4\nL:1/8\nK:G\nGABc d2 e2|'
    rows = [(0, ref, ref, None), (1, ref.replace('G', 'F', 1), ref, None)]
    ds = type('DS', (), {'fonts': ['Leipzig', 'lilypond'], 'groups': ['folk', 'parts']})()
    h = evaluation.holdout_scores(rows, ds, 'parts')
    assert h['seen_fonts']['ser'] == 0.0 and h['holdout_font']['ser'] > 0 and h['holdout_font']['n'] == 1
    assert evaluation.holdout_scores(rows, ds, 'lilypond')['holdout_font']['ser'] == h['holdout_font']['ser']


def _train(out, corpus, *args):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('RANK', None)
    return subprocess.run([sys.executable, 'train.py', 'config/reader.py', f'--data_dir={corpus}', f'--out_dir={out}',
                           '--cache_images=False', '--max_iters=1', '--eval_interval=1', '--eval_iters=1',
                           '--eval_decode_samples=4', '--eval_test_samples=2', '--max_time_minutes=0',
                           '--cpu_threads=1', '--batch_size=4', *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_init_weights_fine_tunes_the_reader(tiny_corpus, tmp_path):
    """init_weights=reader: step 0 is the shipped reader (its val SER before any step is a reader's,
    not a random model's ~100%), with the reader's tokenizer; another architecture is one line."""
    out = tmp_path / 'ft'
    p = _train(out, tiny_corpus, '--init_weights=reader')
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "initializing cnn_line from reader's weights" in p.stdout
    with open(out / 'log.jsonl') as f:
        first = json.loads(f.readline())
    assert first['iter'] == 0 and first['val_ser'] < 0.2, first
    with open(out / 'tokenizer.model', 'rb') as a, open(os.path.join(ROOT, 'reader', 'tokenizer.model'), 'rb') as b:
        assert a.read() == b.read()  # config/reader.py's tokenizer_vocab=512 trains none: the reader's ids
    assert not os.path.exists(out / 'tokenizer.vocab')
    bad = _train(tmp_path / 'bad', tiny_corpus, '--init_weights=reader', '--n_layer=2')
    assert bad.returncode != 0 and 'Traceback' not in bad.stderr
    assert "error: cannot build the model: init_weights=reader: " in bad.stderr.strip().splitlines()[-1] and 'n_layer=3' in bad.stderr


@pytest.mark.parametrize('name', ['parts'])
def test_exclude_a_source_group(tiny_corpus, name):
    """a held-out group leaves the rows of that group out, and only those (the tiny corpus is all folk)."""
    import data
    tok = data.Tokenizer(os.path.join(tiny_corpus, 'tokenizer.model'))
    full = data.OMRDataset(tiny_corpus, 'train', tok, img_height=32)
    assert set(full.groups) == {'folk'}
    assert len(data.OMRDataset(tiny_corpus, 'train', tok, img_height=32, exclude_fonts=(name,))) == len(full)
    assert len(data.OMRDataset(tiny_corpus, 'train', tok, img_height=32, exclude_fonts=('folk',))) == 0


def test_greedy_stops_at_four_tokens_a_column():
    """A decoder that never says eos (its eos logit pushed to -inf) stops after 4 tokens per encoder
    column (W/8 per image, padding excluded), never at max_seq_len: a loop costs a line's worth."""
    import torch
    import model as M
    cfg = dict(backbone='cnn_line', vocab_size=8, n_layer=1, n_head=2, d_model=32, d_ff=64, max_seq_len=128,
               dropout=0.0, img_height=32, pad_id=0, bos_id=2, eos_id=3, collapse_height=True, ctc_weight=0.3)
    torch.manual_seed(0)
    m = M.MusicTrOCR(M.MusicTrOCRConfig(**cfg)).eval()
    with torch.no_grad():
        m.lm_head.bias = torch.nn.Parameter(torch.zeros(8))
        m.lm_head.bias[3] = -1e9
    images, widths = torch.rand(2, 3, 32, 160), torch.tensor([160, 72])
    assert [len(o) for o in m.generate(images, 128, widths=widths)] == [4 * 160 // 8, 4 * 72 // 8]
    assert len(m.generate(images[:1, :, :, :96], 128)[0]) == 4 * 96 // 8  # no widths: every column is real
    assert [len(o) for o in m.generate(images, 128, widths=widths, ignore_eos=True)] == [128, 128]  # benchmarks


def test_learning_curve_fits_a_power_law(tmp_path):
    """bench/learning_curve chains two runs' logs by samples seen, recovers the exponent of an exact
    power law, and its estimate of the samples to a target is what the law says."""
    from bench import learning_curve as L
    a, alpha = 40.0, 0.5
    paths = []
    for k, start in enumerate((0, 4000)):
        rows = [dict(iter=0, samples_seen=0, val_ser=0.99)]  # each run's first eval (skip=1) is left out
        rows += [dict(iter=i, samples_seen=s, val_ser=a * (start + s) ** -alpha) for i, s in ((1, 1000), (2, 2000), (3, 4000))]
        p = tmp_path / f'log{k}.jsonl'
        p.write_text(''.join(json.dumps(r) + '\n' for r in rows))
        paths.append(str(p))
    xs, ys = L.load(paths)
    assert xs.tolist() == [1000, 2000, 4000, 5000, 6000, 8000]
    got_alpha, got_a = L.fit(xs, ys)
    assert got_alpha == pytest.approx(alpha, rel=1e-9) and got_a == pytest.approx(a, rel=1e-9)
    # SER halves when the samples quadruple at alpha 0.5
    assert L.needed(8000, ys[-1], ys[-1] / 2, got_alpha) == pytest.approx(32000)
    assert L.needed(8000, 0.2, 0.1, 1.0) == pytest.approx(16000)
