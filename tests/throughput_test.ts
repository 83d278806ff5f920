/** productRates: the matrix products of a profiled step, grouped by shape, with their rates. */
import assert from "node:assert/strict";
import { productRates, trainingFlops } from "../train/throughput.ts";
import { parseConfig } from "../model/config.ts";

Deno.test("productRates: groups matrix products by label, ignores other kernels", () => {
  const rates = productRates([
    { label: "matmul 768x128x384", ns: 1e6 },
    { label: "layernorm 768x128", ns: 5e6 },
    { label: "matmul 768x128x384", ns: 3e6 },
    { label: "lm_head backward 768x65x128 dw", ns: 1e5 },
  ]);
  assert.equal(rates.length, 2);
  assert.deepEqual(rates[0], {
    label: "matmul 768x128x384",
    count: 2,
    ms: 4,
    gflops: 2 * 2 * 768 * 128 * 384 / 4e6,
  });
  assert.equal(rates[1].label, "lm_head backward 768x65x128 dw");
  assert.equal(rates[1].gflops, 2 * 768 * 65 * 128 / 1e5);
});

Deno.test("trainingFlops: three times the forward's multiply-adds", () => {
  const c = parseConfig({
    vocab_size: 10,
    n_positions: 4,
    n_embd: 8,
    n_layer: 1,
    n_head: 2,
    bos_token_id: 0,
    eos_token_id: 0,
  }, "tiny");
  const perToken = 2 * (8 * 24 + 8 * 8 + 2 * 8 * 32 + 10 * 8) + 2 * 2 * 8 * 5 / 2;
  assert.equal(trainingFlops(c, 2, 4), 3 * perToken * 8);
});
