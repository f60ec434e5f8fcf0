/** Renders library progress events: a bar on a terminal, a few plain lines otherwise, nothing with --json. */
import type { ProgressEvent, ProgressFn } from '../progress.js';

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(0)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function progressRenderer(quiet: boolean, stream: NodeJS.WriteStream = process.stderr): ProgressFn & { end(): void } {
  const tty = stream.isTTY === true;
  const started = new Map<string, number>();
  let lastLine = 0;
  let open = false;
  const fn = ((e: ProgressEvent) => {
    if (quiet) return;
    const now = performance.now();
    if (!started.has(e.task) || e.done <= 0) started.set(e.task, now);
    const t0 = started.get(e.task)!;
    const elapsed = (now - t0) / 1000;
    const rate = elapsed > 0 ? e.done / elapsed : 0;
    const eta = rate > 0 ? (e.total - e.done) / rate : Infinity;
    const frac = e.total > 0 ? e.done / e.total : 0;
    const text = `${e.task} ${e.done}/${e.total} ${e.unit}  ${rate.toFixed(rate < 10 ? 2 : 0)} ${e.unit}/s  ETA ${fmtTime(eta)}`;
    if (tty) {
      const width = 24;
      const filled = Math.round(frac * width);
      stream.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${text}\x1b[K`);
      open = true;
      if (e.done >= e.total) {
        stream.write('\n');
        open = false;
      }
    } else if (now - lastLine > 5000 || e.done >= e.total) {
      // Plain lines for logs: at most one every 5 s, plus the final one.
      stream.write(`${text}\n`);
      lastLine = now;
    }
  }) as ProgressFn & { end(): void };
  fn.end = () => {
    if (open) stream.write('\n');
    open = false;
  };
  return fn;
}
