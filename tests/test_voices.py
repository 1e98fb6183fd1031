"""
Multi-voice labels (issue 12) through the exports: musicxml.repair_bars per voice, to_musicxml ->
music21 note by note against the corpus score the label was made from, and tune.join_lines joining
the systems of a page voice by voice.

The labels are bwv66.6's first five bars (music21's corpus, through abctoolkit.xml2abc, trimmed by
hand to the label format: no text, no fermatas, L:1/8), as four staves and as a grand staff, and
bwv250's first five (six staves: two horns and a choir, the tenor in treble-8, ending in a repeat).
"""

from fractions import Fraction

import pytest

from inference import musicxml
from inference.tune import join_lines

BODY = """\
[V:1] cB | A2 B2 c2 e2 | c2 B2 A2 c2 | AB G2 F2 A2 | B2 B2 F2 E2 |
[V:2] E2 | F2 E2 E2 E2 | EA G2 E2 G2 | FG ^E2 C2 F2 | F2 E2 ^D2 C2 |
[V:3] A,B, | C2 B,2 A,2 B,2 | A,E ED C2 C2 | CD CB, A,2 C2 | B,2 B,2 B,A, G,2 |
[V:4] A,G, | F,2 G,2 A,2 G,2 | A,C, E,2 A,,2 ^E,2 | F,B,, C,2 F,,2 F,2 | G,F, G,A, B,B,, C,2 |"""
HEAD = "L:1/8\nM:4/4\nK:A\nV:1 treble\nV:2 treble\nV:3 bass\nV:4 bass\n"
FOUR = "%%score [ 1 | 2 | 3 | 4 ]\n" + HEAD + BODY
GRAND = "%%score { ( 1 2 ) | ( 3 4 ) }\n" + HEAD + BODY
SIX = """%%score [ 1 | 2 | 3 | 4 | 5 | 6 ]
L:1/8
M:4/4
K:G
V:1 treble
V:2 treble
V:3 treble
V:4 treble
V:5 treble-8
V:6 bass
[V:1] D2 | G2 A2 B2 cd/e/ | d2 cB B2 e2 | d2 c2 B2 A/B/c | B2 AG G2 :|
[V:2] G,2 | B,2 D2 G2 G2 | G/A/B AD G2 G/A/B | ADGD G,2 z2 | z D/B,/ DD B,2 :|
[V:3] D2 | G2 A2 B2 cd/e/ | d2 cB B2 e2 | d2 c2 B2 AB/c/ | A2 AG G2 :|
[V:4] B,C | D2 D2 G2 G2 | GE F2 D2 CB, | A,2 E2 D2 E2 | D4 D2 :|
[V:5] GA | B2 A2 e2 ec | BG A2 G2 G2 | F2 GA BA G2 | G2 F2 B2 :|
[V:6] G,,2 | G,2 F,2 E,D, C,2 | D,2 D,2 G,,2 C,2 | D,2 E,F, G,2 C,2 | D,4 G,,2 :|"""

# abctoolkit.xml2abc's own output for all of bwv66.6 (`python -m abctoolkit.xml2abc -d 8 -u -b 100 -x`
# on music21's MusicXML of it): a whole tune with X:, T:, part names, fermatas, bar-number comments
XML2ABC = """\
X:1
T:bwv66.6.mxl
C:Music21
%%score [ 1 | 2 | 3 | 4 ]
L:1/8
Q:1/4=96
M:4/4
K:F#min
V:1 treble nm="Soprano" snm="S."
V:2 treble nm="Alto" snm="A."
V:3 bass nm="Tenor" snm="T."
V:4 bass nm="Bass" snm="B."
V:1
 cB | A2 B2 !fermata!c2 e2 | c2 B2 !fermata!A2 c2 | AB G2 !fermata!F2 A2 | B2 B2 F2 E2 | A2 B2 !fermata!c2 c2 | A2 B2 c2 A2 | G2 F2 !fermata!G4 | F4 F2 F2- | F2 F^E !fermata!F2 x2 | %10
V:2
 E2 | F2 E2 E2 E2 | EA G2 E2 G2 | FG ^E2 C2 F2 | F2 E2 ^D2 C2 | CF E2 E2 A2 | F2 F2 G2 F2 | F^E FF, C4 | CD E4 DC | B,C D2 C2 x2 | %10
V:3
 A,B, | C2 B,2 A,2 B,2 | A,E ED C2 C2 | CD CB, A,2 C2 | B,2 B,2 B,A, G,2 | F,D CB, A,2 E2 | D2 D2 C2 C2 | DC- CB, ^E,4 | F,2 C4 B,^A, | B,2 B,2 ^A,2 x2 | %10
V:4
 A,G, | F,2 G,2 A,2 G,2 | A,C, E,2 A,,2 ^E,2 | F,B,, C,2 F,,2 F,2 | G,F, G,A, B,B,, C,2 | F,2 G,2 A,2 A,2 | D2 B,2 ^E,2 F,2 | B,,C, D,2 C,4 | ^A,,4 B,,2 C,2 | D,2 B,,2 F,2 x2 | %10"""


def parse(xml):
    import music21
    return music21.converter.parse(xml, format='musicxml')


def voices(score):
    """music21 score -> [[(midi pitches, quarter length) per note/rest] per voice], part by part and
    voice by voice within a part (a part without Voice objects is one voice)."""
    out = []
    for p in score.parts:
        ms = list(p.getElementsByClass('Measure'))
        ids = sorted({v.id for m in ms for v in m.voices}, key=str)
        for vid in ids or [None]:
            seq = []
            for m in ms:
                src = [v for v in m.voices if v.id == vid] if vid is not None else [m]
                for s in src:
                    seq += [(tuple(x.midi for x in n.pitches), Fraction(n.quarterLength).limit_denominator(96))
                            for n in s.notesAndRests if not (n.isRest and n.style.hideObjectOnPrint)]
            out.append(seq)
    return out


@pytest.fixture(scope='module')
def chorale():
    """bwv66.6's four parts, bars 0-4, as voices() lists: the truth the labels were made from."""
    import music21
    s = music21.corpus.parse('bwv66.6').measures(0, 4)
    return [v for p in s.parts for v in voices(music21.stream.Score([p]))]


def test_undamaged_labels_are_left_exactly_as_they_are():
    assert musicxml.repair_bars(FOUR) == FOUR
    assert musicxml.repair_bars(GRAND) == GRAND
    assert musicxml.repair_bars(SIX) == SIX  # the short bar before ':|' completes the pickup: kept


def test_xml2abc_output_as_it_is(chorale):
    """A whole tune as xml2abc writes it (its own X:, decorations, '%10' comments, 'V:n' lines before
    the music): nothing is taken for a note, every bar but the pickups is full, note by note the corpus."""
    import music21
    assert musicxml.repair_bars(XML2ABC) == '\n'.join(ln.strip() for ln in XML2ABC.split('\n'))  # as written
    xml = musicxml.to_musicxml(XML2ABC)
    lens = measure_lengths(xml)
    assert len(lens) == 4 * 10 and all(v == [Fraction(1 if k == 0 else 4)] for _, k, v in lens)
    s = music21.corpus.parse('bwv66.6')
    assert voices(parse(xml)) == [v for p in s.parts for v in voices(music21.stream.Score([p]))]


def test_six_staves_treble8_and_a_repeat_note_by_note():
    import music21
    s = parse(musicxml.to_musicxml(SIX))
    assert [type(p.recurse().getElementsByClass('Clef')[0]).__name__ for p in s.parts] == \
        ['TrebleClef'] * 4 + ['Treble8vbClef', 'BassClef']
    c = music21.corpus.parse('bach/bwv250').measures(0, 4)
    want = [v for p in c.parts for v in voices(music21.stream.Score([p]))]
    got = voices(s)
    # the corpus's bar 4 also holds the upbeat after the repeat, which the label leaves out: one note
    assert [len(w) - len(g) for g, w in zip(got, want)] == [1] * 6
    assert got == [w[:len(g)] for g, w in zip(got, want)]  # pitches (the tenor sounding an octave down) and lengths


@pytest.mark.parametrize('label,parts,per_part', [(FOUR, 4, 1), (GRAND, 2, 2)], ids=['four', 'grand'])
def test_multi_voice_label_to_musicxml_note_by_note(chorale, label, parts, per_part):
    s = parse(musicxml.to_musicxml(label))
    assert len(s.parts) == parts
    got = voices(s)
    assert len(got) == parts * per_part == 4
    assert [len(list(p.getElementsByClass('Measure'))) for p in s.parts] == [5] * parts
    clefs = [type(p.recurse().getElementsByClass('Clef')[0]).__name__ for p in s.parts]
    assert clefs == (['TrebleClef', 'TrebleClef', 'BassClef', 'BassClef'] if parts == 4 else ['TrebleClef', 'BassClef'])
    assert got == chorale  # same pitches and durations, voice by voice


def measure_lengths(xml):
    """[(part, measure index from 0, [quarter length per voice])] of a MusicXML score."""
    out = []
    for pi, p in enumerate(parse(xml).parts):
        for k, m in enumerate(p.getElementsByClass('Measure')):
            vs = list(m.voices) or [m]
            out.append((pi, k, [Fraction(sum(n.quarterLength for n in v.notesAndRests)).limit_denominator(96)
                                       for v in vs]))
    return out


@pytest.mark.parametrize('label', [FOUR, GRAND], ids=['four', 'grand'])
def test_a_damaged_voice_is_repaired_so_every_voice_fills_every_bar(label):
    damaged = (label.replace('EA G2 E2 G2 |', 'EA G2 E2 G |')          # voice 2, bar 2: an eighth short
                    .replace('CD CB, A,2 C2 |', 'CD CB, A,2 C2 D |')   # voice 3, bar 3: an eighth long
                    .replace('[V:1] cB |', '[V:1] c |'))               # voice 1's pickup: an eighth short
    fixed = musicxml.repair_bars(damaged)
    assert '[V:2] E2 | F2 E2 E2 E2 | EA G2 E2 G z |' in fixed
    assert '[V:3] A,B, | C2 B,2 A,2 B,2 | A,E ED C2 C2 | CD CB, A,2 C2 |' in fixed
    assert '[V:1] c z |' in fixed  # a pickup as long as the other voices' pickups
    assert fixed.split('\n')[:8] == damaged.split('\n')[:8]  # the header untouched
    lens = measure_lengths(musicxml.to_musicxml(damaged))
    assert len(lens) == 5 * (4 if label is FOUR else 2)
    for part, number, per_voice in lens:
        assert per_voice == [Fraction(1 if number == 0 else 4)] * len(per_voice), (part, number, per_voice)


def test_voices_keep_their_own_pickup_and_last_bar():
    """A short last bar is kept short in every voice (the pickup's complement), and padded only up
    to the longest voice's; a single-voice tune is repaired exactly as before."""
    abc = "L:1/8\nM:3/4\nK:C\nV:1 treble\nV:2 bass\n[V:1] c2 | e6 | d4 |\n[V:2] C,2 | E,6 | D,2 |"
    assert musicxml.repair_bars(abc).split('\n')[-2:] == ['[V:1] c2 | e6 | d4 |', '[V:2] C,2 | E,6 | D,2 z2 |']
    assert musicxml.repair_bars('M:4/4\nL:1/8\nK:C\nC2 | D2 E2 | F8 G2 | A2 |]') == 'M:4/4\nL:1/8\nK:C\nC2 | D2 E2 z4 | F8 | A2 |]'


def test_join_lines_appends_each_voice_to_its_line():
    """Two systems of a page, each a multi-voice transcription -> one tune: the header once, each
    voice's bars appended to that voice's line; single-voice joining is unchanged."""
    sys1 = GRAND
    sys2 = "%%score { ( 1 2 ) | ( 3 4 ) }\n" + HEAD + "[V:1] A4 |\n[V:2] E4 |\n[V:3] C4 |\n[V:4] A,,4 |"
    tune, skipped = join_lines([sys1, sys2])
    assert skipped == []
    lines = tune.split('\n')
    assert lines[:8] == GRAND.split('\n')[:8]
    assert lines[8] == '[V:1] cB | A2 B2 c2 e2 | c2 B2 A2 c2 | AB G2 F2 A2 | B2 B2 F2 E2 | A4 |'
    assert lines[11] == '[V:4] A,G, | F,2 G,2 A,2 G,2 | A,C, E,2 A,,2 ^E,2 | F,B,, C,2 F,,2 F,2 | G,F, G,A, B,B,, C,2 | A,,4 |'
    assert len(lines) == 12
    # the voices of a system in another order: still appended to their own lines
    swapped = sys2.replace('[V:1] A4 |\n[V:2] E4 |', '[V:2] E4 |\n[V:1] A4 |')
    assert join_lines([sys1, swapped]) == (tune, [])
    # a key change from the second system on (key signatures are drawn on every system, so a change
    # lasts): inline once, in every voice; a last system's own key is a misreading
    tune, _ = join_lines([sys1, sys2.replace('K:A', 'K:D'), sys2.replace('K:A', 'K:D')])
    assert all(ln.count('| [K:D] ') == 1 for ln in tune.split('\n')[8:])
    assert join_lines([sys1, sys2.replace('K:A', 'K:D')])[0] == join_lines([sys1, sys2])[0]
    # a system whose voices are not the page's (another score, a misread) is left out
    tune, skipped = join_lines([sys1, "%%score [ 1 | 2 ]\n" + HEAD[:16] + "V:1 treble\nV:2 bass\n[V:1] A4 |\n[V:2] C4 |"])
    assert skipped == [1] and tune == GRAND
    # music of one voice: as before
    assert join_lines(['M:4/4\nL:1/8\nK:G\nGABc |', 'M:4/4\nL:1/8\nK:G\ndefg |'])[0] == 'M:4/4\nL:1/8\nK:G\nGABc |\ndefg |'
