"""
tests/test_musicxml_written.py: MusicXML that MuseScore imports without one error (issue 25), checked
without MuseScore: every <note>'s type and dots equal its duration (lengths no note value has are split
into written values, tied for notes), every bar adds up in music21 (empty bars and voltas with no music
do not become measures), ties reach the same pitch, repeats and pickups survive, and each part names
an instrument. bench/musicxml_check.py runs the same exports through MuseScore 3 itself.
"""
import random
import xml.etree.ElementTree as ET
from fractions import Fraction as F

import pytest

from bench.musicxml_check import bar_check, damaged
from inference import musicxml

TYPES = {'long': F(4), 'breve': F(2), 'whole': F(1), 'half': F(1, 2), 'quarter': F(1, 4), 'eighth': F(1, 8),
         '16th': F(1, 16), '32nd': F(1, 32), '64th': F(1, 64), '128th': F(1, 128)}
LABEL = 'M:4/4\nL:1/8\nK:G\nB | GE EG DB, DE | GA BG A2 z B/A/ |'


def written_mismatches(xml):
    """[(measure, duration, written value)] for every note/rest whose <type>, dots and tuplet ratio
    do not give its <duration> (what MuseScore reports as 'calculated duration not equal to
    specified duration')."""
    root, bad, div = ET.fromstring(xml.split('\n', 2)[2] if xml.startswith('<?xml') else xml), [], None
    for m in root.iter('measure'):
        for el in m:
            if el.tag == 'attributes' and el.find('divisions') is not None:
                div = int(el.find('divisions').text)
            if el.tag != 'note' or el.find('grace') is not None or el.find('duration') is None:
                continue
            dur = F(int(el.find('duration').text), 4 * div)
            if el.find('type') is None:
                if el.find('rest') is not None and el.find('rest').get('measure') == 'yes':
                    continue  # a whole-bar rest needs no type
                bad.append((m.get('number'), dur, None))
                continue
            v = TYPES[el.find('type').text]
            v *= 2 - F(1, 2 ** len(el.findall('dot')))
            tm = el.find('time-modification')
            if tm is not None:
                v *= F(int(tm.find('normal-notes').text), int(tm.find('actual-notes').text))
            if v != dur:
                bad.append((m.get('number'), dur, v))
    return bad


def test_split_len_gives_written_values_that_add_up():
    assert musicxml.split_len(F(5, 32)) == [F(1, 8), F(1, 32)]
    assert musicxml.split_len(F(5, 16)) == [F(1, 4), F(1, 16)]
    assert musicxml.split_len(F(3, 8)) == [F(3, 8)]      # a dotted quarter is one value
    assert musicxml.split_len(F(7, 16)) == [F(7, 16)]    # a double-dotted quarter
    assert musicxml.split_len(F(9, 8)) == [F(1), F(1, 8)]
    # abc2xml writes 2520 divisions per quarter: a 64th (157.5) or a dotted 32nd (472.5) has none, so the
    # written values stop at a 32nd and durations are put on that grid first (quantize)
    assert min(musicxml.WRITTEN) == F(1, 32) and F(3, 64) not in musicxml.WRITTEN and F(7, 64) not in musicxml.WRITTEN
    assert all((w * 4 * 2520).denominator == 1 for w in musicxml.WRITTEN)
    assert [musicxml.quantize(x) for x in (F(1, 64), F(1, 128), F(3, 64), F(5, 32), F(0))] == \
        [F(1, 32), F(1, 32), F(1, 16), F(5, 32), F(1, 32)]
    rng = random.Random(0)
    for _ in range(500):
        d = F(rng.randint(1, 200), 2 ** rng.randint(0, 5))
        parts = musicxml.split_len(d)
        assert sum(parts) == d and all(p in musicxml.WRITTEN for p in parts) and parts == sorted(parts, reverse=True)


def test_padding_rests_and_odd_notes_are_written_values():
    # a bar 5/32 short is padded with an eighth and a 32nd rest, not one '32nd' of 5/32
    assert musicxml.repair_bars('M:4/4\nL:1/8\nK:C\nC8 | D4 E2 F3/4 | G8 |') == 'M:4/4\nL:1/8\nK:C\nC8 | D4 E2 F3/4 z z/4 | G8 |'
    # a model's G5/2 becomes a tied G2 + G/2; a chord is tied note by note; accidentals written once
    fixed = musicxml.repair_bars('M:4/4\nL:1/8\nK:C\nC8 | ^G5/2 A/ [CEG]5/2 ^F/ z2 | G8 |')
    assert fixed.split('\n')[-1] == 'C8 | ^G2-G/2 A/ [C2-E2-G2-][C/2E/2G/2] ^F/ z2 | G8 |'
    for abc in [fixed, 'M:3/4\nL:1/8\nK:D\nd5/2 e/ f2 | A5 z/ |', 'M:6/8\nL:1/8\nK:C\nc9/4 d | e6 |',
                'M:2/4\nL:1/16\nK:C\nc5 d3 | e13 |', 'M:4/4\nL:1/8\nK:C\nG2 (3A5/2Bc d4 | f2 g2 a3 |]']:
        xml = musicxml.to_musicxml(abc)
        assert written_mismatches(xml) == [], abc


def test_undamaged_labels_keep_their_text():
    assert musicxml.repair_bars(LABEL) == LABEL
    tune = 'M:6/8\nL:1/8\nK:D\n|: A | d2e fed | A3 A2 :|2 z |]'
    assert musicxml.repair_bars(tune) == tune


@pytest.mark.parametrize('kind', ['short', 'long', 'odd_len', 'dangling_tie', 'ties_everywhere', 'short_end_empty_bars',
                                  'garbage', 'empty_bar'])
def test_damaged_labels_export_with_every_bar_full_and_every_note_written(kind):
    for i, label in enumerate([LABEL, 'M:3/4\nL:1/8\nK:F\nA2 B2 c2 | d4 z2 | F6 | G2 A2 B2 |',
                               'M:6/8\nL:1/8\nK:D\nd2e fed | A3 A2 z | d2e fed | A3 A2 z |]']):
        abc = damaged(label, random.Random(i))[kind]
        xml = musicxml.to_musicxml(abc)
        bars, bad, rep = bar_check(xml)
        assert bars >= 2 and bad == 0 and written_mismatches(xml) == [], (kind, abc, musicxml.repair_bars(abc))


def test_empty_bars_and_bare_voltas_make_no_measure():
    # the 14-of-18: empty bars after the last note ('|4- |4- |') became measures, so the short
    # last bar (left short as the pickup's complement) sat in the middle of the tune
    abc = 'M:4/2\nL:1/8\nK:C\nC8 D8 | E4- E2- D2- D2- |4- |4- |'
    fixed = musicxml.repair_bars(abc)
    assert fixed.split('\n')[-1] == 'C8 D8 | E4- E2 D2- D2 |'
    assert bar_check(musicxml.to_musicxml(abc))[:2] == (2, 0)
    assert musicxml.repair_bars('M:4/4\nL:1/8\nK:C\n|: G8 | A8 :| | |: B8 |1 c8 :|2 d8 | |]').split('\n')[-1] == \
        '|: G8 | A8 :||: B8 |1 c8 :|2 d8 |]'


def test_ties_reach_the_same_pitch_or_are_dropped():
    fixed = musicxml.repair_bars('M:4/4\nL:1/8\nK:C\nG4- G4 | A4- A2 B2- | [CE]4- [CE]4 | c4- z4 | d8- |')
    assert fixed.split('\n')[-1] == 'G4- G4 | A4- A2 B2 | [CE]4- [CE]4 | c4 z4 | d8 |'
    # across a line break (a page's staves), a tie stays
    assert musicxml.repair_bars('M:4/4\nL:1/8\nK:C\nC8 | G8- |\nG8 | A8 |').split('\n')[-2] == 'C8 | G8- |'


def test_repeats_pickups_and_instruments_survive():
    import music21
    abc = 'M:6/8\nL:1/8\nK:D\n|: A | d2e fed | A3 A2 :|\n|: e | f2g agf | e3 e2 :|'
    xml = musicxml.to_musicxml(abc)
    assert '<score-instrument id="P1-I1">' in xml and '<midi-instrument id="P1-I1">' in xml
    assert '<part-name>Music</part-name>' in xml
    s = music21.converter.parseData(xml, format='musicxml')
    ms = list(s.parts[0].getElementsByClass('Measure'))
    assert ms[0].duration.quarterLength == 0.5  # the pickup
    reps = [b.direction for m in ms for b in (m.leftBarline, m.rightBarline) if isinstance(b, music21.bar.Repeat)]
    assert reps == ['start', 'end', 'start', 'end']
    assert ms[3].duration.quarterLength == 0.5  # the second strain's pickup (after ':|'), kept short too
    bars, bad, rep = bar_check(xml)
    assert bad == 0 and rep == 2  # the short bar closing the first repeat + the next pickup: one bar split, the convention
    two = musicxml.with_instruments('<part-list><score-part id="P1"><part-name /></score-part>'
                                    '<score-part id="P2"><part-name /></score-part></part-list>')
    assert two.count('<score-instrument') == 2 and '<midi-channel>2</midi-channel>' in two
