import { closeContext, makeContext, runCase } from "./scripts/fuzz_cases.ts";
const ctx = await makeContext();
const groups = new Map<string, number>();
for (let i = 0; i < 400; i++) {
  const r = await runCase(ctx, 5, i);
  const key = `${r.kind} ${r.outcome}: ${
    r.detail.replace(/\/tmp\/\S+/g, "P").replace(/\d+/g, "N").slice(0, 90)
  }`;
  groups.set(key, (groups.get(key) ?? 0) + 1);
}
await closeContext(ctx);
for (const [k, n] of [...groups].sort()) console.log(String(n).padStart(4), k);
