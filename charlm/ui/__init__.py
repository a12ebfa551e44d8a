"""What a person sees: messages and displays on stderr, and the views that are a command's payload.

    console.py       the stderr console every message goes through, and warn
    progress.py      the live training display and the closing lines of `charlm train`
    charts.py        a run's train/validation series, and sparklines of them
    info.py          `charlm info`: a checkpoint described as a dict (for --json) and as text
    plot.py          `charlm plot`: the training curve as a PNG (matplotlib, optional)
    explain_view.py  `charlm explain` and `charlm units` on a terminal: coloured text and tables
    html.py          `charlm explain --html`: one self-contained page
"""
