"""
inference/: reading what users bring: pages, PDFs and TIFFs, their staves and systems, and what comes
out besides ABC (sample.py drives it).

    pages.py      files in (images, PDFs), staves found and cut, each transcribed, lines joined into a tune
    staves.py     find the staves on a page and crop each like a training image
    systems.py    group staves into systems (several voices read together)
    musicxml.py   ABC -> MusicXML that MuseScore imports (bars repaired to add up)
    attention.py  where the decoder looked: cross-attention pictures (sample.py --attention)
"""
