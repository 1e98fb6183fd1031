% tests/data/lily_bass_edge.png: lilypond -dcrop -dresolution=150 --png lily_bass_edge.ly (LilyPond 2.24, pip lilypond).
% The crop ends on the bottom staff line: the old staff finder raised IndexError in ink_extent.grow.
\version "2.24.0"
\paper { indent = 0 tagline = ##f }
{ \clef bass \time 4/4 \omit Score.BarNumber c'4 d'4 e'4 f'4 | g'2 e'2 | c'1 \bar "|." }
