"""
tests/test_reader.py: the reader shipped in reader/ (trained on a 2-core CPU, see reader/README.md).
Its real weights transcribe the shipped test-split images (tunes it never trained on) with a symbol
error rate under a bound, through sample.py's command line as a user runs it: no --out_dir.
"""

import glob
import json
import os
import subprocess
import sys

import pytest

from core import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READER = os.path.join(ROOT, 'reader')
SAMPLES = sorted(glob.glob(os.path.join(READER, 'samples', '*.png')))


def refs():
    out = []
    for p in SAMPLES:
        with open(p[:-4] + '.abc') as f:
            out.append(f.read().rstrip('\n'))
    return out


def transcribe(*args):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    r = subprocess.run([sys.executable, 'sample.py', f'--image={os.path.join(READER, "samples")}', *args],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr
    # several images: each transcription follows a "% <file name>" line and ends with a blank line
    preds = [block.split('\n', 1)[1].rstrip('\n') for block in r.stdout.split('% ')[1:]]
    assert len(preds) == len(SAMPLES)
    return preds


def test_reader_files_and_size():
    names = sorted(os.listdir(READER))
    for f in ('README.md', 'config.json', 'model.safetensors', 'tokenizer.model'):
        assert f in names
    size = sum(os.path.getsize(os.path.join(READER, f)) for f in ('config.json', 'model.safetensors', 'tokenizer.model'))
    assert size <= 20 * 2 ** 20
    assert len(SAMPLES) >= 8
    with open(os.path.join(READER, 'config.json')) as f:
        meta = json.load(f)
    assert meta['train_config']['data_dir'].endswith('m21/full')


@pytest.mark.parametrize('decode, bound', [('auto', 0.03), ('attention', 0.03), ('ctc', 0.15)])
def test_shipped_reader_reads_unseen_test_images(decode, bound):
    preds = transcribe(f'--decode={decode}')
    sc = metrics.score(preds, refs())
    assert sc['ser'] <= bound, sc
