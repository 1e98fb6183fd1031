"""
data/engravers.py: one interface to the three engravers a corpus builder can draw a label with.

    verovio   data/engrave.py            ~14 excerpts a second per core; five SMuFL fonts
    lilypond  data/engrave_lilypond.py   label -> MusicXML -> musicxml2ly -> lilypond; batched calls
    abcm2ps   data/engrave_abcm2ps.py    label -> abcm2ps SVG -> resvg with font files

Every image is drawn from its label and checked against it (the label-first rule): verovio's MEI, the
MusicXML LilyPond is given, or the glyphs of abcm2ps' SVG are read back and compared with the label's
events; a mismatch is a ValueError('mismatch ...') and the builder skips the excerpt. Every engraver's
image is grayscale, black on white, cropped to the ink plus a 6-19 px margin, with a staff space of
18-27 px (verovio's scale 100-150), so the rest of the pipeline cannot tell them apart by size.

    layout = sample_layout('lilypond', rng)            # all of an image's randomness is in its layout
    img = engrave_image(label, 'lilypond', layout)      # PIL image, or ValueError
    imgs = engrave_images(labels, 'lilypond', layouts)  # a batch: one lilypond process for all
"""

# beside this file (data/), and canonical.py (data/m21/): the corpus builders put both on sys.path
import engrave
import engrave_abcm2ps
import engrave_lilypond
from canonical import check_agreement, mark_ties, score_to_measures, write_excerpt

ENGRAVERS = ('verovio', 'lilypond', 'abcm2ps')
VEROVIO_FONTS = ('Leipzig', 'Bravura', 'Gootville', 'Leland', 'Petaluma')
# what a corpus row's `font` column says for the engravers that have one typeface: train.py's
# --holdout_font=lilypond then leaves an engraver out, the way it leaves a verovio font out
FONT_OF = {'lilypond': 'lilypond', 'abcm2ps': 'abcm2ps'}


def available(engraver):
    """is the engraver installed? (verovio: pip; lilypond: pip `lilypond`; abcm2ps: apt `abcm2ps`)"""
    if engraver == 'verovio':
        try:
            import verovio  # noqa: F401
            return True
        except ImportError:
            return False
    return {'lilypond': engrave_lilypond.available, 'abcm2ps': engrave_abcm2ps.available}[engraver]()


def sample_layout(engraver, rng):
    """the page options of one image, drawn from rng: staff size, spacing, line widths, margin."""
    if engraver == 'verovio':  # the draws of data/m21/prepare.py's sample_layout, plus the margin
        return dict(font=VEROVIO_FONTS[int(rng.integers(len(VEROVIO_FONTS)))], scale=int(rng.integers(100, 151)),
                    spacingLinear=round(float(rng.uniform(0.15, 0.3)), 3),
                    spacingNonLinear=round(float(rng.uniform(0.5, 0.7)), 3), margin=int(rng.integers(6, 20)))
    if engraver == 'lilypond':
        return engrave_lilypond.sample_layout(rng)
    if engraver == 'abcm2ps':
        return engrave_abcm2ps.sample_layout(rng)
    raise ValueError(f'unknown engraver {engraver!r}; choose from {ENGRAVERS}')


def label_measures(label):
    """a canonical label -> its measures of events (canonical.py), for the agreement checks of a caller
    that has only the label. ValueError unless music21's reading writes back to the very label."""
    try:
        measures = score_to_measures(engrave_lilypond.read_label(label))
    except ValueError:
        raise
    except Exception as e:  # music21 raises many exception types
        raise ValueError(f'music21 cannot read the label ({type(e).__name__})')
    mark_ties(measures)
    if write_excerpt(measures) != label:
        raise ValueError('not a canonical label (music21 reads it back differently)')
    return measures


def engrave_images(labels, engraver, layouts, measures=None):
    """draw each label with `engraver` and its layout; measures[i]: the label's measures from the
    builder (canonical.write_excerpt's input), else read from the label. -> list with, per label, a
    grayscale PIL image or the ValueError that rejected it."""
    if engraver == 'lilypond':  # its check reads the MusicXML back: it needs the label only
        return engrave_lilypond.draw(labels, layouts)
    out = []
    for i, (label, layout) in enumerate(zip(labels, layouts)):
        try:
            ms = measures[i] if measures is not None else label_measures(label)
            if engraver == 'verovio':
                svg, mei = engrave.engrave(label, layout['font'], layout)
                check_agreement(mei, ms)
                out.append(engrave.rasterize(svg, layout['margin']))
            elif engraver == 'abcm2ps':
                svg = engrave_abcm2ps.draw_svg(label, layout)
                engrave_abcm2ps.check_svg(svg, ms)
                out.append(engrave_abcm2ps.rasterize(svg, layout))
            else:
                raise ValueError(f'unknown engraver {engraver!r}; choose from {ENGRAVERS}')
        except ValueError as e:
            out.append(e)
    return out


def engrave_image(label, engraver, layout, measures=None):
    """one label -> grayscale PIL image drawn by `engraver`; ValueError if it fails or disagrees."""
    got = engrave_images([label], engraver, [layout], None if measures is None else [measures])[0]
    if isinstance(got, ValueError):
        raise got
    return got


def parse_shares(text):
    """'verovio:0.6,lilypond:0.2,abcm2ps:0.2' -> {engraver: share}, shares summing to 1."""
    shares = {}
    for part in filter(None, text.split(',')):
        name, _, w = part.partition(':')
        if name not in ENGRAVERS:
            raise ValueError(f'unknown engraver {name!r} in --engravers; choose from {ENGRAVERS}')
        try:
            shares[name] = float(w) if w else 1.0
        except ValueError:
            raise ValueError(f'--engravers: {part!r} is not engraver:share') from None
        if shares[name] < 0:
            raise ValueError(f'--engravers: negative share for {name}')
    total = sum(shares.values())
    if not shares or total <= 0:
        raise ValueError('--engravers names no engraver with a share above 0')
    return {k: v / total for k, v in shares.items()}


def pick(shares, rng):
    """one engraver, drawn with the given shares ({engraver: share}, in ENGRAVERS order)."""
    u, acc = float(rng.random()), 0.0
    for name in ENGRAVERS:
        acc += shares.get(name, 0.0)
        if u < acc:
            return name
    return max(shares, key=shares.get)


def draw_windows(label_of, windows, engraver, layouts, max_aspect=None, rounds=3):
    """draw windows of measures with one engraver, batched. windows: [(a, b)]; label_of(a, b) -> (label,
    measures). An image wider than max_aspect:1 is drawn again with the window cut from the end to the
    measures that should fit (at least 2), as prepare.py does for verovio one measure at a time.
    -> per window (b, label, image), or the ValueError that rejected it."""
    out, todo = [None] * len(windows), list(range(len(windows)))
    bs = [b for _, b in windows]
    for _ in range(rounds):
        if not todo:
            break
        made = [label_of(windows[i][0], bs[i]) for i in todo]
        imgs = engrave_images([m[0] for m in made], engraver, [layouts[i] for i in todo], [m[1] for m in made])
        again = []
        for i, (label, _), img in zip(todo, made, imgs):
            a = windows[i][0]
            if isinstance(img, ValueError) or max_aspect is None or img.width <= max_aspect * img.height:
                out[i] = img if isinstance(img, ValueError) else (bs[i], label, img)
            elif bs[i] - a <= 2:
                out[i] = ValueError(f'wider than {max_aspect}:1 even with 2 measures')
            else:
                fit = int((bs[i] - a) * max_aspect * img.height / img.width)
                bs[i] = a + max(2, min(fit, bs[i] - a - 1))
                again.append(i)
        todo = again
    for i in todo:
        out[i] = ValueError(f'wider than {max_aspect}:1')
    return out
