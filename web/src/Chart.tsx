// A time-series chart drawn by uPlot, resized with its container.
import { useEffect, useRef } from 'react';
import uPlot from 'uplot';
import type { Aligned } from './timeseries';

const palette = ['#2563eb', '#dc2626', '#059669', '#d97706', '#7c3aed', '#db2777', '#0891b2', '#65a30d', '#475569', '#ea580c'];

export function seriesColor(i: number): string {
  return palette[i % palette.length];
}

/**
 * Draws data (x in Unix seconds) with one line per key. The chart is
 * recreated only when keys change; new data is drawn with setData. xRange
 * (Unix seconds) fixes the time axis to the range asked for, so that a
 * range with few points is not stretched over years.
 */
export function Chart({
  keys,
  data,
  height = 260,
  label,
  testId,
  empty = 'No numeric data in this range.',
  xRange,
}: {
  keys: string[];
  data: Aligned;
  height?: number;
  label: string;
  testId?: string;
  empty?: string;
  xRange?: [number, number];
}) {
  const box = useRef<HTMLDivElement>(null);
  const range = useRef(xRange);
  range.current = xRange;
  const plot = useRef<uPlot | null>(null);
  const keySig = keys.join('\u0000');

  useEffect(() => {
    const el = box.current;
    if (!el || keys.length === 0) return;
    const width = Math.max(280, el.clientWidth || 600);
    const opts: uPlot.Options = {
      width,
      height,
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: true, range: (_u, min, max) => range.current ?? [min, max] } },
      // Points show by themselves where data is sparse (uPlot's default),
      // so a range with one bucket still shows it.
      series: [{}, ...keys.map((k, i) => ({ label: k, stroke: seriesColor(i), width: 1.5, spanGaps: true }))],
      axes: [{}, { size: 56 }],
      legend: { live: true },
    };
    const u = new uPlot(opts, data as uPlot.AlignedData, el);
    plot.current = u;
    let ro: ResizeObserver | undefined;
    if (typeof ResizeObserver !== 'undefined') {
      ro = new ResizeObserver(() => {
        const w = Math.max(280, el.clientWidth);
        if (w && Math.abs(w - u.width) > 2) u.setSize({ width: w, height });
      });
      ro.observe(el);
    }
    return () => {
      ro?.disconnect();
      u.destroy();
      plot.current = null;
    };
    // data is applied by the effect below; recreating on each update
    // would lose the zoom and cost a full redraw.
  }, [keySig, height]);

  useEffect(() => {
    plot.current?.setData(data as uPlot.AlignedData);
  }, [data]);

  const n = data[0].length;
  const summary = keys
    .map((k, i) => {
      const ys = data[i + 1] as (number | null)[];
      let last: number | null = null;
      for (let j = ys.length - 1; j >= 0; j--) {
        if (ys[j] !== null) {
          last = ys[j];
          break;
        }
      }
      return `${k}: ${last === null ? 'no value' : Math.round(last * 1000) / 1000}`;
    })
    .join('; ');

  return (
    <figure className="chart" data-testid={testId} data-points={n} data-keys={keys.join(',')}>
      <div ref={box} className="chart-canvas" role="img" aria-label={`${label}. ${keys.length ? `${n} points; latest ${summary}` : empty}`} />
      {keys.length === 0 ? <p className="muted chart-empty">{empty}</p> : null}
    </figure>
  );
}
