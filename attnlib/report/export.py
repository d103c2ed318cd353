"""The executed report notebook as one HTML file (code hidden, figures embedded) and, where Chromium is installed,
a PDF printed from it: what `make reproduce` and `make report` write beside the report notebook.

Apart from attnlib.report.tables, which every notebook imports, because nbconvert and nbformat take seconds to import
(nbformat's schema validation pulls in a URI grammar that alone took 1.5 s on a 2-core AMD EPYC).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

from attnlib.results import atomic_write_text


def export_report(notebook, out_dir) -> list[str]:
    """The executed report notebook as report.html (code hidden, figures embedded) and, where Debian's
    Chromium is installed, report.pdf printed from that HTML. Returns one line per file written or skipped."""
    out_dir = Path(out_dir)
    exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(TEMPLATES)], exclude_input=True,
                            exclude_input_prompt=True, exclude_output_prompt=True)
    title = f"attention-conv: report of results/{out_dir.name}"  # the page's and the PDF's title
    body, _ = exporter.from_notebook_node(nbformat.read(str(notebook), as_version=4),
                                          resources={"metadata": {"name": title}})
    html = out_dir / "report.html"
    atomic_write_text(html, body)
    lines = [f"report: {html} ({html.stat().st_size / 1e6:.1f} MB)"]
    browser = find_chromium()
    if browser is None:
        return lines + [f"report: no PDF ({NO_CHROMIUM})"]
    pdf = out_dir / "report.pdf"
    tmp = pdf.with_suffix(".pdf.tmp")
    cmd = [browser, *CHROMIUM_FLAGS, "--no-pdf-header-footer", f"--print-to-pdf={tmp}", html.resolve().as_uri()]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=180)
        tmp.replace(pdf)
        lines.append(f"report: {pdf} ({pdf.stat().st_size / 1e6:.1f} MB)")
    except (subprocess.SubprocessError, OSError) as err:
        tmp.unlink(missing_ok=True)
        lines.append(f"report: no PDF ({browser} failed: {type(err).__name__})")
    return lines


TEMPLATES = Path(__file__).resolve().parent / "templates"  # offline/: the HTML template of the report
NO_CHROMIUM = "no Chromium on PATH; `make setup` installs Debian's as root, or: apt-get install chromium"

# Headless Chromium on a machine without internet: no first-run, sync or update traffic.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def find_chromium() -> str | None:
    """Debian's Chromium (apt-get install chromium), or another Chromium on PATH; None if there is none."""
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
