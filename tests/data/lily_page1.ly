% tests/data/lily_page1.ly: a LilyPond-engraved test page (traditional melody, public domain).
% Rendered with: lilypond --png -dresolution=150 -o lily_page1 lily_page1.ly  (LilyPond 2.24)
\version "2.24.0"
\header { title = "Twinkle, Twinkle" composer = "Traditional" tagline = "page made by LilyPond for nanoOMR tests" }
\paper { #(set-paper-size "a4") print-page-number = ##t print-first-page-number = ##t }
melody = \relative c' {
  \clef treble \key c \major \time 4/4 \tempo "Moderato" 4 = 96
  c4 c g' g | a a g2 | f4 f e e | d d c2 | \break
  g'4 g f f | e e d2 | g4 g f f | e e d2 | \break
  c4 c g' g | a a g2 | f4 f e e | d d c2 | \break
  c8 d e f g a b c | c,4 e g c | b a g f | e d c2 | \break
  e4 e d d | c1 \bar "|."
}
words = \lyricmode {
  Twin -- kle, twin -- kle, lit -- tle star, how I won -- der what you are.
  Up a -- bove the world so high, like a dia -- mond in the sky.
  Twin -- kle, twin -- kle, lit -- tle star, how I won -- der what you are.
}
\score { << \new Voice = "m" \melody \new Lyrics \lyricsto "m" \words >> \layout { } }
