/**
 * Charts as SVG, drawn by Vega-Lite with no browser: the one chart home of `deno task train`'s
 * loss curve, every experiment's figure and the lab page's (which takes it through mod.ts).
 *
 * @module
 */
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";

/** A quantitative axis of a {@linkcode lineChart}: a field, its title, maybe a log scale. */
export interface Axis {
  field: string;
  type: "quantitative";
  title: string;
  scale?: { type: "log"; domain?: number[]; nice?: boolean };
}

/**
 * A Vega-Lite line chart with a point at every value, 420 × 220: `y` against `x`, one coloured
 * line per value of the `series` field (legend at the top left), or one black line without.
 * Spread it to change what differs: `{ ...lineChart(points, x, y), width: 300 }`.
 */
export function lineChart(values: readonly object[], x: Axis, y: Axis, series?: string) {
  const color = {
    field: series ?? "",
    type: "nominal",
    sort: null,
    title: null,
    legend: { orient: "top-left", labelLimit: 300 },
  } as const;
  return {
    width: 420,
    height: 220,
    data: { values: [...values] },
    mark: series
      ? { type: "line", point: true } as const
      : { type: "line", point: { color: "black" }, color: "black" } as const,
    encoding: series ? { x, y, color } : { x, y },
  };
}

/** Renders a Vega-Lite spec to an SVG string, headless (no browser, no canvas). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const config = { font: "Helvetica, Arial, sans-serif", background: "white" };
  const { spec: compiled } = compile({ config, ...spec } as TopLevelSpec);
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
