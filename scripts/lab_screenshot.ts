/**
 * Takes docs/lab.png, the README's picture of the lab: starts `deno task lab --port 0`, opens
 * `/?demo` in headless Chromium (a run without the cache, then one with it in slow motion) and
 * captures the page while the cached run is half-way through the context.
 *
 * `deno run -A scripts/lab_screenshot.ts [OUT.png]`
 *
 * @module
 */
import { Browser, findChromium } from "./chromium.ts";

const out = Deno.args[0] ?? "docs/lab.png";
const chromium = findChromium();
if (!chromium) {
  console.error("lab_screenshot: no chromium on PATH (apt-get install chromium)");
  Deno.exit(1);
}
const lab = new Deno.Command(Deno.execPath(), {
  args: ["task", "lab", "--port", "0"],
  stdout: "piped",
  stderr: "null",
}).spawn();
let browser: Browser | null = null;
try {
  const reader = lab.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { value } = await reader.read();
  const url = value?.match(/http:\/\/127\.0\.0\.1:\d+\//)?.[0];
  if (!url) throw new Error(`the lab printed no address: ${value}`);
  browser = await Browser.launch(chromium, 1280, 1250);
  await browser.open(`${url}?demo`);
  // The cached run has drawn its time curve and filled half of the char model's 64 rows.
  await browser.waitFor(
    `document.getElementById("useCache").checked && ` +
      `document.querySelector("#timeChart svg") && ` +
      `Number(document.getElementById("stripNote").textContent.match(/^(\\d+) steps, .*, cached$/)?.[1] ?? 0) >= 28`,
    300_000,
    "the cached run half-way",
  );
  await Deno.writeFile(out, await browser.screenshot());
  console.log(`wrote ${out}`);
} finally {
  await browser?.close();
  lab.kill("SIGTERM");
  await lab.status;
}
