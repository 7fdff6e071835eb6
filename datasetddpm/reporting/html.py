"""`compare.html`: the compare report as one self-contained page.

Everything is inline (CSS in a <style> element, pictures as base64 PNG data URIs, no script), so the
file can be mailed, attached to an issue or opened offline and shows the same everywhere.
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path

from ..io import atomic_path

STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1150px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eef2f7; }
tr.best td { font-weight: bold; }
img { max-width: 100%; display: block; margin: 8px 0; }
pre { background: #f6f6f6; padding: 8px; font-size: 11px; overflow-x: auto; white-space: pre-wrap; }
p.note { color: #555; font-size: 13px; }
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def html_table(header: list[str], rows: list[list[str]], highlight: int | None = None) -> str:
    """Cells are escaped here, so callers pass plain text."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    best = ' class="best"'
    body = "".join(f"<tr{best if i == highlight else ''}>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>"
                   for i, r in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def summary_table(methods: dict[str, dict]) -> str:
    fastest = min(r["seconds_per_image"] for r in methods.values())
    rows = [[m, f"{100 * r['miou']:.1f}", f"{r['seconds_per_image']:.4f}", f"{r['seconds_per_image'] / fastest:.3g}x"]
            for m, r in methods.items()]
    best = max(range(len(rows)), key=lambda i: list(methods.values())[i]["miou"])
    return html_table(["method", "mIoU (%)", "seconds / image", "time vs fastest"], rows, highlight=best)


def class_table(methods: dict[str, dict]) -> str:
    names = list(next(iter(methods.values()))["iou"])
    rows = [[c, *(f"{100 * r['iou'][c]:.1f}" for r in methods.values())] for c in names]
    return html_table(["class", *(f"{m} IoU (%)" for m in methods)], rows)


def figure_block(title: str, png: bytes, alt: str) -> str:
    return f"<h2>{escape(title)}</h2><img alt=\"{escape(alt)}\" src=\"{data_uri(png)}\">"


DIRECT = "direct DDPM"  # compare's row name for direct mode; every other row is a trained segmenter


def page_heading(methods: dict[str, dict], config: dict) -> str:
    """Names each segmenter compared by its row and, where the name does not say it, the architecture its
    recorded config gives (e.g. "U-Net (synthetic)", "DatasetGAN (DeepLabV3)"): not one fixed architecture."""
    from ..segmenters.model import ARCH_NAMES
    names = []
    for name in (m for m in methods if m != DIRECT):
        arch = ((config.get(f"segmenter: {name}") or {}).get("segmenter") or {}).get("arch")
        arch = ARCH_NAMES.get(arch, arch)
        names.append(name if not arch or arch in name else f"{name} ({arch})")
    return f"DatasetDDPM: {', '.join(names) or 'segmenter'} vs direct DDPM mode"


def compare_html(report: dict, figures: dict[str, bytes], config: dict) -> str:
    """The page: summary and per-class tables, the pictures (`figures`: "speed", "iou", "overlays"),
    and the resolved configuration the numbers came from."""
    methods = report["methods"]
    parts = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<title>DatasetDDPM compare</title>", f"<style>{STYLE}</style></head><body>",
             f"<h1>{escape(page_heading(methods, config))}</h1>",
             f"<p>{report['test_images']} real test images from <code>{escape(report['data'])}</code>.</p>",
             f"<p class=\"note\">Protocol: {escape(report['protocol'])}.</p>",
             "<h2>Summary</h2>", summary_table(methods),
             figure_block("Speed trade-off", figures["speed"], "mIoU against seconds per image"),
             figure_block("IoU per class", figures["iou"], "grouped bars of IoU per class and method"),
             class_table(methods),
             figure_block("Test images, ground truth and predictions", figures["overlays"],
                          "test images with ground-truth and predicted label overlays"),
             "<h2>Resolved configuration</h2>",
             f"<pre>{escape(json.dumps(config, indent=2, default=str))}</pre>",
             "</body></html>\n"]
    return "\n".join(parts)


def write_compare_html(path: str | Path, report: dict, figures: dict[str, bytes], config: dict) -> Path:
    text = compare_html(report, figures, config)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
