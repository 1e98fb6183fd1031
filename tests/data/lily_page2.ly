% tests/data/lily_page2.ly: a LilyPond-engraved test page (traditional melody, public domain).
% Rendered with: lilypond --png -dresolution=150 -o lily_page2 lily_page2.ly  (LilyPond 2.24)
\version "2.24.0"
\header { title = "Frere Jacques" subtitle = "Round" composer = "Traditional, France" tagline = "page made by LilyPond for nanoOMR tests" }
\paper { #(set-paper-size "a4") print-page-number = ##t print-first-page-number = ##t }
melody = \relative c'' {
  \clef treble \key g \major \time 4/4
  g4 a b g | g a b g | b c d2 | b4 c d2 | \break
  d8 e d c b4 g | d'8 e d c b4 g | g d g2 | g4 d g2 | \break
  \clef bass \key f \major
  f,,4 g a f | f g a f | a bes c2 | a4 bes c2 | \break
  c8 d c bes a4 f | c'8 d c bes a4 f | f c f2 | f4 c f2 | \break
  \clef treble \key d \major \time 3/4
  d''4 fis a | d2 cis4 | b2 a4 | g fis e | d2. | fis4 a d | e2 fis4 | d2. \break
  a'4 a a | b2 a4 | g fis e | d2. \bar "|."
}
\score { \new Staff \melody \layout { } }
