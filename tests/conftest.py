"""
tests/conftest.py: shared pytest fixtures. `tiny_corpus` prepares a small real corpus once per session.

The repo root goes on sys.path so tests can `import data, model, ...` when pytest runs from anywhere.
"""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TINY_TUNES = 20  # real music21 corpus tunes; about 50 excerpts, ~10-20 s on 2 cores


def prepare_tiny(out_dir, seed=1337, max_tunes=TINY_TUNES, **kw):
    """run data/m21/prepare.py's prepare() into out_dir (imported by path: data/ is not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('m21_prepare', os.path.join(ROOT, 'data', 'm21', 'prepare.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.prepare(out_dir, max_tunes=max_tunes, seed=seed, num_workers=2, quiet=True, **kw)


@pytest.fixture(scope='session')
def tiny_corpus(tmp_path_factory):
    """path (str) of a prepared DatasetDict (train/val/test non-empty, tokenizer.model, meta.json)."""
    out = str(tmp_path_factory.mktemp('corpus') / 'm21_tiny')
    prepare_tiny(out)
    return out


@pytest.fixture(scope='module')
def one_thread():
    """One intra-op thread for a test module (use with pytest.mark.usefixtures): its models are tiny,
    and on a shared 2-core machine two OpenMP threads per process are many times slower per training
    step, from spin-wait contention."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
