"""
inference/render.py: the one engraving pipeline every picture in the project goes through. verovio
turns ABC or MusicXML into SVG; resvg turns the SVG into pixels on white paper, as a grayscale image.
The corpus builders (data/engrave.py), sample.py's re-engraving of a transcription and the page
benchmarks (bench/pages.py, bench/systems.py) all call it, so they draw the same way.

engrave(abc) draws a transcription (a line, a page's lines, or several voices) with its MIDI, for
sample.py --save_dir; sample.py runs it in a child process (`python -m inference.render`), since
verovio can crash on the ABC a confused model writes.
"""
import base64
import io
import os
import re
import sys

import numpy as np
from PIL import Image

from inference import musicxml
from inference.tune import split_voices


def verovio_toolkit(options):
    """a fresh verovio toolkit set to `options`, its log off. Fresh per input: verovio 6.4's ABC reader
    keeps the previous tune's key signature. Quiet: verovio warns on stderr for every odd input, and
    every caller checks what it drew itself."""
    import verovio
    verovio.enableLog(verovio.LOG_OFF)
    tk = verovio.toolkit()
    tk.setOptions(options)
    return tk


def text_fonts():
    """resvg options that draw text (titles, composers, part names) with matplotlib's bundled DejaVu
    fonts, so a machine with no system fonts draws them too."""
    import matplotlib
    return dict(font_dirs=[os.path.join(os.path.dirname(matplotlib.__file__), 'mpl-data', 'fonts', 'ttf')],
                serif_family='DejaVu Serif')


def crop_to_ink(img, margin):
    """grayscale PIL image -> the box of its ink (pixels < 200) plus `margin` white pixels on every side,
    the way every training image is cut, whichever engraver drew it. ValueError on a blank image."""
    a = np.asarray(img)
    ys, xs = np.nonzero(a < 200)
    if len(ys) == 0:
        raise ValueError('blank image')
    box = (max(0, xs.min() - margin), max(0, ys.min() - margin), min(a.shape[1], xs.max() + margin + 1),
           min(a.shape[0], ys.max() + margin + 1))
    out = Image.new('L', (box[2] - box[0], box[3] - box[1]), 255)
    out.paste(img.crop(box), (0, 0))
    return out


def svg_to_gray(svg, **resvg_options):
    """SVG -> grayscale PIL image on white paper (resvg's own background is transparent, which a
    grayscale conversion turns black). resvg_options go to resvg_py.svg_to_bytes (fonts)."""
    import resvg_py
    png = resvg_py.svg_to_bytes(svg_string=svg, background='#ffffff', **resvg_options)
    return Image.open(io.BytesIO(bytes(png))).convert('L')


def engrave(abc):
    """ABC -> (grayscale PIL image of the engraving, MIDI bytes) with verovio; ValueError if it fails.
    One line of music is engraved as one long system; a tune of several lines keeps its line breaks;
    a multi-voice tune (issue 12's '[V:n]' lines) is one long system of all its staves.
    The transcriptions carry no 'X:' line (the data engine engraves them with 'X:1' prepended), so we
    add it the same way."""
    opts = {'breaks': 'none', 'pageWidth': 60000, 'adjustPageWidth': True, 'adjustPageHeight': True,
            'header': 'none', 'footer': 'none', 'scale': 50}
    music = [ln for ln in abc.splitlines() if ln.strip() and not (len(ln) > 1 and ln[1] == ':')]
    poly = split_voices(abc) is not None
    if poly:
        # verovio 6.4's ABC reader has no voices (it draws each [V:n] line as one more treble
        # system); it reads the MusicXML that musicxml.py writes (voices, staves, clefs) instead
        abc = musicxml.to_musicxml(abc)
    elif len(music) > 1:  # a page's tune, one ABC line per staff: engraved as those lines, on one tall page
        opts.update(breaks='encoded', pageWidth=2100, pageHeight=60000, adjustPageWidth=False)
        # verovio 6.4's ABC reader draws a stray clef for a line-leading inline [K:..]; as field lines
        # ('K:F' on its own line) it does not (it still draws no key change there: a verovio limit;
        # the .abc and the .musicxml keep the change)
        abc = re.sub(r'(?m)^((?:\[[KML]:[^\]\n]*\])+) *', lambda m: '\n'.join(re.findall(r'\[([KML]:[^\]]*)\]', m.group(1))) + '\n', abc)
    tk = verovio_toolkit(opts)
    text = abc if poly or abc.lstrip().startswith('X:') else 'X:1\n' + abc + '\n'
    if not abc.strip() or not tk.loadData(text) or tk.getPageCount() < 1:
        raise ValueError("verovio could not read the ABC")
    svg = tk.renderToSVG(1)
    gray = svg_to_gray(svg)
    if np.asarray(gray).min() == 255:
        raise ValueError("verovio drew nothing")
    midi = base64.b64decode(tk.renderToMIDI())
    return gray, midi


def engrave_to_files(abc_path, png_path, mid_path):
    """The child process of sample.py --save_dir (`python -m inference.render ABC PNG MID`): engrave the ABC in abc_path, write the PNG and MIDI."""
    with open(abc_path, encoding='utf-8') as f:
        img, midi = engrave(f.read())
    img.save(png_path, format='PNG')
    with open(mid_path, 'wb') as f:
        f.write(midi)


if __name__ == '__main__':
    engrave_to_files(*sys.argv[1:])
