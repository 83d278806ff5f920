import assert from "node:assert/strict";
import { lineChart, renderSvg } from "../io/chart.ts";

Deno.test("lineChart + renderSvg: an SVG with both axis titles and one legend entry per series", async () => {
  const points = [
    { n: 1, ms: 2, path: "general" },
    { n: 2, ms: 3, path: "general" },
    { n: 1, ms: 1, path: "fused" },
    { n: 2, ms: 1.5, path: "fused" },
  ];
  const x = { field: "n", type: "quantitative", title: "tokens" } as const;
  const y = { field: "ms", type: "quantitative", title: "time (ms)" } as const;
  const svg = await renderSvg({ ...lineChart(points, x, y, "path"), title: "a chart" });
  assert.match(svg, /^<svg/);
  for (const text of ["tokens", "time (ms)", "general", "fused", "a chart"]) {
    assert.ok(svg.includes(text), `the SVG names ${text}`);
  }
});
