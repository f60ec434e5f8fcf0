/**
 * The quality plot of `bench-quality --svg FILE`: perplexity (log scale) vs budget, one line per
 * method, one panel per model, the original model's perplexity as a dashed line. Hand-written SVG,
 * no dependencies. Points above the panel's top (PLOT_CEILING × original) sit on its edge as
 * open markers, so one collapsed method does not flatten the others.
 */
import type { SweepRow } from '../compress/sweep.js';

const W = 420;
const H = 300;
const M = { left: 52, right: 12, top: 28, bottom: 40 };
/** The top of each panel, as a multiple of the original perplexity. */
export const PLOT_CEILING = 2;
const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf', '#000000', '#aec7e8'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function f(v: number): string {
  return v.toFixed(1);
}

/** Tick values for a log axis between lo and hi: 1, 1.5, 2, 3, 5 × powers of ten that fall inside. */
function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let p = Math.floor(Math.log10(lo)); p <= Math.ceil(Math.log10(hi)); p++) {
    for (const m of [1, 1.2, 1.5, 2, 3, 5, 7]) {
      const v = m * 10 ** p;
      if (v >= lo && v <= hi) out.push(v);
    }
  }
  return out;
}

/** rows: every model's sweep rows (the `original` row gives the reference line); a label per row: method (+ calibration). */
export function qualitySvg(rows: SweepRow[], label: (r: SweepRow) => string = (r) => r.method): string {
  const models = [...new Set(rows.map((r) => r.model))];
  const series = [...new Set(rows.filter((r) => r.method !== 'original').map(label))];
  const legendH = 18 * Math.ceil(series.length / 4) + 8;
  const totalW = W * models.length;
  const totalH = H + legendH;
  const out: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${totalW}" height="${totalH}" viewBox="0 0 ${totalW} ${totalH}" font-family="sans-serif" font-size="11">`, `<rect width="${totalW}" height="${totalH}" fill="white"/>`];
  const budgets = [...new Set(rows.filter((r) => r.method !== 'original').map((r) => r.budget))].sort((a, b) => a - b);
  const bmin = budgets[0] ?? 0.1;
  const bmax = budgets[budgets.length - 1] ?? 0.5;
  models.forEach((model, k) => {
    const x0 = k * W;
    const mine = rows.filter((r) => r.model === model);
    const orig = mine.find((r) => r.method === 'original')?.perplexity ?? 1;
    const lo = orig * 0.98;
    const hi = orig * PLOT_CEILING;
    const px = (b: number) => x0 + M.left + ((b - bmin) / (bmax - bmin || 1)) * (W - M.left - M.right);
    const py = (p: number) => M.top + (1 - (Math.log(Math.min(Math.max(p, lo), hi)) - Math.log(lo)) / (Math.log(hi) - Math.log(lo))) * (H - M.top - M.bottom);
    out.push(`<text x="${f(x0 + W / 2)}" y="16" text-anchor="middle" font-weight="bold">${esc(model)} (original ${orig.toFixed(2)})</text>`);
    out.push(`<rect x="${f(x0 + M.left)}" y="${M.top}" width="${W - M.left - M.right}" height="${H - M.top - M.bottom}" fill="none" stroke="#999"/>`);
    for (const t of logTicks(lo, hi)) {
      out.push(`<line x1="${f(x0 + M.left)}" x2="${f(x0 + W - M.right)}" y1="${f(py(t))}" y2="${f(py(t))}" stroke="#eee"/>`);
      out.push(`<text x="${f(x0 + M.left - 4)}" y="${f(py(t) + 4)}" text-anchor="end">${t >= 100 ? t.toFixed(0) : t.toFixed(1)}</text>`);
    }
    for (const b of budgets) out.push(`<text x="${f(px(b))}" y="${H - M.bottom + 14}" text-anchor="middle">${b}</text>`);
    out.push(`<text x="${f(x0 + M.left + (W - M.left - M.right) / 2)}" y="${H - 8}" text-anchor="middle">budget (fraction of bf16 expert bytes)</text>`);
    out.push(`<text transform="translate(${f(x0 + 12)},${f(M.top + (H - M.top - M.bottom) / 2)}) rotate(-90)" text-anchor="middle">perplexity (log)</text>`);
    out.push(`<line x1="${f(x0 + M.left)}" x2="${f(x0 + W - M.right)}" y1="${f(py(orig))}" y2="${f(py(orig))}" stroke="#000" stroke-dasharray="4 3"/>`);
    series.forEach((s, si) => {
      const pts = mine.filter((r) => r.method !== 'original' && label(r) === s && r.perplexity !== null).sort((a, b) => a.budget - b.budget);
      if (!pts.length) return;
      const color = COLORS[si % COLORS.length];
      const width = s.startsWith('auto') ? 2.5 : 1.2;
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="${width}" points="${pts.map((r) => `${f(px(r.budget))},${f(py(r.perplexity!))}`).join(' ')}"><title>${esc(s)}</title></polyline>`);
      for (const r of pts) {
        const clipped = r.perplexity! > hi;
        out.push(`<circle cx="${f(px(r.budget))}" cy="${f(py(r.perplexity!))}" r="2.5" fill="${clipped ? 'white' : color}" stroke="${color}"><title>${esc(s)} @ ${r.budget}: ${r.perplexity!.toFixed(2)}</title></circle>`);
      }
    });
  });
  series.forEach((s, si) => {
    const x = 12 + (si % 4) * Math.max(160, totalW / 4);
    const y = H + 8 + 18 * Math.floor(si / 4);
    const color = COLORS[si % COLORS.length];
    out.push(`<line x1="${f(x)}" x2="${f(x + 22)}" y1="${y}" y2="${y}" stroke="${color}" stroke-width="${s.startsWith('auto') ? 2.5 : 1.2}"/><text x="${f(x + 28)}" y="${y + 4}">${esc(s)}</text>`);
  });
  out.push(`<text x="${totalW - 8}" y="${totalH - 4}" text-anchor="end" fill="#666">dashed: original; open markers: above ${PLOT_CEILING}× original</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}
