// The figures as rows of text cells, shared by the terminal table and the Markdown report: every
// setup's median, and after it the ratio to kernel vxlan from the same run, paired by round (the
// median of the rounds' own ratios, summary.ts).
import { formatRate, type MicroResult } from "./micro.js";
import { BASELINE } from "./settings.js";
import type { Figure } from "./summary.js";

/** Three significant digits, without exponent notation for the ranges benchmarks produce. */
export function formatValue(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return "-";
  if (v === 0) return "0";
  const digits = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(v))));
  return v.toFixed(Math.min(digits, 4));
}

export function formatRatio(r: number | undefined): string {
  if (r === undefined) return "n/a";
  return `${r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2)}x`;
}

/** `setups`: the setups' names, one column each. */
export function figureHeader(setups: string[]): string[] {
  return ["figure", "unit", "better", ...setups.map((b) => (b === BASELINE ? `${b} (baseline)` : b))];
}

/**
 * A cell: the median, the ratio (not for the baseline) and over how many rounds it is when not
 * all, and how many runs failed, if any did.
 */
export function figureRow(f: Figure, setups: string[]): string[] {
  return [
    f.label,
    f.unit,
    f.better,
    ...setups.map((b) => {
      const notes = [
        ...(b === BASELINE ? [] : [formatRatio(f.pairedRatios[b])]),
        ...(b !== BASELINE && f.pairedRounds[b] < f.rounds ? [`${f.pairedRounds[b]} of ${f.rounds} rounds`] : []),
        ...(f.failed[b] ? [`${f.failed[b]} failed`] : []),
      ];
      return `${formatValue(f.medians[b])}${notes.length > 0 ? ` (${notes.join(", ")})` : ""}`;
    }),
  ];
}

export function microHeader(): string[] {
  return ["case", "rate", "unit", "±%"];
}

export function microRow(m: MicroResult): string[] {
  return [m.name, formatRate(m.rate), `${m.unit}/s`, m.rme.toFixed(1)];
}

/** Microbenchmark results by suite, in the order they ran. */
export function microSuites(results: MicroResult[]): Array<[string, MicroResult[]]> {
  const suites = new Map<string, MicroResult[]>();
  for (const m of results) suites.set(m.suite, [...(suites.get(m.suite) ?? []), m]);
  return [...suites];
}

/** A plain-text table with aligned columns (numbers right-aligned). */
export function textTable(header: string[], rows: string[][], leftColumns = 3): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i < leftColumns ? c.padEnd(widths[i]) : c.padStart(widths[i])))
      .join("  ")
      .trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

export function markdownTable(header: string[], rows: string[][], rightFrom = 3): string {
  const esc = (c: string) => c.replace(/\|/g, "\\|");
  return [
    `| ${header.map(esc).join(" | ")} |`,
    `|${header.map((_, i) => (i >= rightFrom ? "---:" : "---")).join("|")}|`,
    ...rows.map((r) => `| ${r.map(esc).join(" | ")} |`),
  ].join("\n");
}
