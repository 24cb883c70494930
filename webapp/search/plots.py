"""Small server-side SVG line charts (training curves), so a page needs no charting library or JS."""

from __future__ import annotations

from django.utils.html import escape


def line_chart(points: list[tuple[float, float]], title: str, width: int = 560, height: int = 200) -> str:
    """An SVG chart of ``points`` (x, y) with min/max labels; empty string when there is nothing to draw."""
    pts = [(float(x), float(y)) for x, y in points if y == y]  # drop NaN
    if not pts:
        return ""
    pad_l, pad_r, pad_t, pad_b = 52, 12, 24, 28
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * w

    def sy(y: float) -> float:
        return pad_t + (1 - (y - y0) / (y1 - y0)) * h

    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f'<text x="{pad_l}" y="16" class="chart-title">{escape(title)}</text>'
        f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" class="axis"/>'
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + h}" class="axis"/>'
        f'<text x="{pad_l - 6}" y="{pad_t + 4}" text-anchor="end">{y1:.3g}</text>'
        f'<text x="{pad_l - 6}" y="{pad_t + h}" text-anchor="end">{y0:.3g}</text>'
        f'<text x="{pad_l}" y="{height - 8}">{x0:.0f}</text>'
        f'<text x="{pad_l + w}" y="{height - 8}" text-anchor="end">step {x1:.0f}</text>'
        f'<polyline points="{line}" fill="none" class="series"/></svg>'
    )
