// The report's bar chart as a self-contained SVG (no scripts, fonts or anything fetched), viewable
// in any browser: per figure, one bar per setup showing its ratio to kernel vxlan (paired by round,
// summary.ts) on a log
// scale, so 0.5x and 2x are equally long and the baseline is the vertical line at 1x; below, the
// figures without a useful ratio (loss, flood tail, idle cost, the agents' CPU) as absolute values.
// A setup whose runs of a figure failed says how many beside its bar, in red, as the table does.
import type { BackendType } from "../backends/backend.js";
import { BASELINE, type BenchSetup } from "./settings.js";
import type { Figure } from "./summary.js";
import { formatRatio, formatValue } from "./table.js";

const COLORS: Record<BackendType, string> = {
  vxlan: "#4c72b0",
  "host-gw": "#55a868",
  "wasm-vxlan": "#dd8452",
  udp: "#8172b3",
};
const LABEL_W = 280;
const PLOT_W = 480;
const VALUE_W = 150;
const BAR_H = 14;
const GAP = 12;
const TOP = 84;

/**
 * A setup's bars are in its backend's colour; without offloads they are filled halfway to white
 * and outlined in it, so that both setups of a backend read as one backend, told apart at a glance.
 */
function barStyle(s: BenchSetup): string {
  const c = COLORS[s.backend];
  if (s.offloads !== false) return `fill="${c}"`;
  const light = [1, 3, 5]
    .map((i) =>
      Math.round((parseInt(c.slice(i, i + 2), 16) + 255) / 2)
        .toString(16)
        .padStart(2, "0"),
    )
    .join("");
  return `fill="#${light}" stroke="${c}"`;
}

/** How many of `setup`'s runs of the figure failed, as a red note to append to a text, or "". */
function failedNote(f: Figure, setup: string): string {
  const n = f.failed[setup];
  return n ? `<tspan fill="#c44e52">${esc(` (${n} failed)`)}</tspan>` : "";
}

export function chartSvg(figures: Figure[], setups: BenchSetup[], title: string): string {
  const others = setups.filter((s) => s.name !== BASELINE);
  // Figures whose baseline may be near zero (loss, the agents' CPU under kernel backends) give
  // ratios that say little and would squash every other bar.
  const shown = figures.filter((f) => !f.mayBeZero && others.some((s) => f.pairedRatios[s.name] !== undefined));
  const ratios = shown.flatMap((f) =>
    others.map((s) => f.pairedRatios[s.name]).filter((r): r is number => r !== undefined && r > 0),
  );
  // Powers of two around every ratio (and 1x), at most 1/256x .. 256x.
  const lo = Math.max(-8, Math.floor(Math.log2(Math.min(1, ...ratios))));
  const hi = Math.min(8, Math.ceil(Math.log2(Math.max(1, ...ratios))));
  const span = Math.max(1, hi - lo);
  const x = (r: number) => LABEL_W + ((Math.min(hi, Math.max(lo, Math.log2(r))) - lo) / span) * PLOT_W;
  const groupH = others.length * BAR_H + GAP;
  // Those figures, and any other without a ratio, get bars of their own below: absolute values of
  // every setup (the baseline's too) on a linear scale per figure, the largest value full length.
  // A figure whose every run failed is listed there too, so that its failures show.
  const absolute = figures.filter(
    (f) =>
      !shown.includes(f) &&
      (setups.some((s) => Number.isFinite(f.medians[s.name] ?? Number.NaN)) || Object.keys(f.failed).length > 0),
  );
  const ratioBottom = TOP + shown.length * groupH;
  const absTop = ratioBottom + 70;
  const absGroupH = setups.length * BAR_H + GAP;
  const height = absolute.length > 0 ? absTop + absolute.length * absGroupH + 10 : ratioBottom + 40;
  const width = LABEL_W + PLOT_W + VALUE_W;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
  );
  out.push(`<rect width="100%" height="100%" fill="#fff"/>`);
  out.push(`<text x="10" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`);
  out.push(
    `<text x="10" y="38" fill="#555">ratio to kernel vxlan (${BASELINE}) from the same run, medians, log scale; each figure says whether higher or lower is better</text>`,
  );
  let lx = 10;
  for (const s of others) {
    out.push(
      `<rect x="${lx}" y="48" width="10" height="10" ${barStyle(s)}/><text x="${lx + 14}" y="57">${esc(s.name)}</text>`,
    );
    lx += 24 + s.name.length * 7;
  }
  const step = span > 8 ? 2 : 1;
  for (let e = Math.ceil(lo / step) * step; e <= hi; e += step) {
    const tx = x(2 ** e);
    out.push(
      `<line x1="${tx}" y1="${TOP - 6}" x2="${tx}" y2="${ratioBottom + 10}" stroke="${e === 0 ? "#000" : "#ddd"}" stroke-width="${e === 0 ? 1.5 : 1}"/>`,
    );
    out.push(
      `<text x="${tx}" y="${ratioBottom + 24}" text-anchor="middle" fill="#555">${e >= 0 ? 2 ** e : `1/${2 ** -e}`}x</text>`,
    );
  }
  out.push(`<text x="${x(1) - 6}" y="${TOP - 10}" text-anchor="end" fill="#555">less than ${BASELINE}</text>`);
  out.push(`<text x="${x(1) + 6}" y="${TOP - 10}" fill="#555">more than ${BASELINE}</text>`);
  shown.forEach((f, i) => {
    const y0 = TOP + i * groupH;
    out.push(
      `<text x="${LABEL_W - 8}" y="${y0 + (others.length * BAR_H) / 2 + 4}" text-anchor="end">${esc(`${f.label} (${f.better} is better)`)}${f.failed[BASELINE] ? `<tspan fill="#c44e52">${esc(`, ${BASELINE}: ${f.failed[BASELINE]} failed`)}</tspan>` : ""}</text>`,
    );
    others.forEach((s, k) => {
      const b = s.name;
      const r = f.pairedRatios[b];
      const y = y0 + k * BAR_H;
      if (r === undefined || r <= 0) {
        out.push(`<text x="${x(1) + 4}" y="${y + BAR_H - 3}" fill="#999">n/a${failedNote(f, b)}</text>`);
        return;
      }
      const a = x(1);
      const bx = x(r);
      out.push(
        `<rect x="${Math.min(a, bx)}" y="${y + 1}" width="${Math.max(1, Math.abs(bx - a))}" height="${BAR_H - 2}" ${barStyle(s)}><title>${esc(`${b}: ${formatValue(f.medians[b])} ${f.unit} vs ${formatValue(f.medians[BASELINE])} ${f.unit}`)}</title></rect>`,
      );
      out.push(
        `<text x="${LABEL_W + PLOT_W + 6}" y="${y + BAR_H - 3}" fill="${COLORS[s.backend]}">${esc(`${formatRatio(r)}  ${formatValue(f.medians[b])} ${f.unit}`)}${failedNote(f, b)}</text>`,
      );
    });
  });
  if (absolute.length > 0)
    out.push(
      `<text x="10" y="${absTop - 14}" fill="#555">absolute medians, linear scale per figure (kernel vxlan's may be 0, so no ratio): every setup</text>`,
    );
  absolute.forEach((f, i) => {
    const y0 = absTop + i * absGroupH;
    const max = Math.max(...setups.map((s) => f.medians[s.name] ?? 0));
    out.push(
      `<text x="${LABEL_W - 8}" y="${y0 + (setups.length * BAR_H) / 2 + 4}" text-anchor="end">${esc(`${f.label} (${f.better} is better)`)}</text>`,
    );
    setups.forEach((s, k) => {
      const v = f.medians[s.name];
      const y = y0 + k * BAR_H;
      if (v === undefined || !Number.isFinite(v)) {
        out.push(`<text x="${LABEL_W + 4}" y="${y + BAR_H - 3}" fill="#999">n/a${failedNote(f, s.name)}</text>`);
        return;
      }
      const w = max > 0 ? Math.round((v / max) * PLOT_W * 10) / 10 : 0;
      out.push(
        `<rect x="${LABEL_W}" y="${y + 1}" width="${Math.max(1, w)}" height="${BAR_H - 2}" ${barStyle(s)}><title>${esc(`${s.name}: ${formatValue(v)} ${f.unit}`)}</title></rect>`,
      );
      out.push(
        `<text x="${LABEL_W + PLOT_W + 6}" y="${y + BAR_H - 3}" fill="${COLORS[s.backend]}">${esc(`${formatValue(v)} ${f.unit}  ${s.name}`)}${failedNote(f, s.name)}</text>`,
      );
    });
  });
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}
