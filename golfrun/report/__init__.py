"""The campaign report: one self-contained HTML page and the same figures as PNG files.

    collect(campaign_dir) -> ReportData        golfrun/report/collect.py (stdlib: reads the folder)
    figures(data) -> {name: PNG bytes}         golfrun/report/figures.py (matplotlib, Agg)
    render_html(data, figures) -> str          golfrun/report/render.py (Jinja2 template)
    write_report(campaign_dir, out_dir)        golfrun/report/write.py (the three, then the files)

Only `figures` imports matplotlib, and only when called: `golfrun status` (which names the
report's path through golfrun/report/paths.py) stays light. docs/report.md has the long form.
"""
