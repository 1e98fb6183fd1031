"""
data/m21/excerpts.py: how a piece of music becomes excerpts, for every source of the m21 corpus
(prepare.py's folk tunes, sources.py's score parts, transposed tunes and synthetic lines): its split
(a hash of the source file and index, stable across seeds and corpus sizes), its windows of 2-8
measures, and the engraving layout drawn for each excerpt.
"""
import hashlib

FONTS = ['Leipzig', 'Bravura', 'Gootville', 'Leland', 'Petaluma']
SPLIT_PCT = (90, 5, 5)  # train / val / test, by tune
# at most this many notes/rests per excerpt (but always >= 2 measures): 8 bars of a reel would give a
# 6000 x 180 px strip, much longer than a printed system (aspect ~10:1) and than max_width at train time
MAX_EVENTS = 32
MAX_ASPECT = 16  # and at most 16:1 (width:height); long notes are wide, so this is checked on the image


def tune_hash(relpath, index, salt=''):
    return int(hashlib.sha1(f'{salt}{relpath}#{index}'.encode()).hexdigest()[:12], 16)

def split_of(relpath, index):
    """train/val/test from a hash of (source file, tune index): stable, independent of seed and max_tunes."""
    h = tune_hash(relpath, index) % 100
    return 'train' if h < SPLIT_PCT[0] else 'val' if h < SPLIT_PCT[0] + SPLIT_PCT[1] else 'test'


def choose_excerpts(measures, rng, max_excerpts, min_len=2, max_len=8, max_events=MAX_EVENTS):
    """cut the tune into consecutive windows of 2-8 measures (random lengths, shortened to at most
    max_events notes/rests unless that leaves fewer than 2 measures), keep the windows whose measures
    are all supported and share one (clef, key, meter), then keep up to max_excerpts of them.
    Windows never overlap. -> list of (start, end) measure indices, in tune order."""
    count = lambda w: sum(1 for m in w for e in m['events'] if not e['grace'])
    windows, i = [], 0
    while i + min_len <= len(measures):
        n = int(rng.integers(min_len, max_len + 1))
        while n > min_len and count(measures[i:i + n]) > max_events:
            n -= 1
        w = measures[i:i + n]
        if len(w) >= min_len and all(m['ok'] for m in w) and len({m['ctx'] for m in w}) == 1:
            windows.append((i, i + len(w)))
        i += n
    if len(windows) > max_excerpts:
        keep = sorted(rng.choice(len(windows), size=max_excerpts, replace=False).tolist())
        windows = [windows[k] for k in keep]
    return windows

def sample_layout(rng):
    """per-sample engraving style, so the model does not learn one typeface or one spacing."""
    return dict(font=FONTS[int(rng.integers(len(FONTS)))], scale=int(rng.integers(100, 151)),
                spacingLinear=round(float(rng.uniform(0.15, 0.3)), 3),   # verovio's defaults: 0.25, 0.6
                spacingNonLinear=round(float(rng.uniform(0.5, 0.7)), 3))
