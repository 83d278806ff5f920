/**
 * Typed wrappers for `gelu.wgsl`: GPT-2's gelu_new and its backward, element-wise.
 *
 * @module
 */
import { type Dispatch, type Gpu, numel, type Tensor, workgrid } from "./gpu.ts";

import formula from "./gelu_formula.wgsl" with { type: "text" };
import kernels from "./gelu.wgsl" with { type: "text" };

/** gelu.wgsl behind the formula it calls. */
const code = `${formula}\n${kernels}`;

/** Throws unless every tensor has `a`'s shape, of a multiple of 4 elements. */
function checkSame(what: string, a: Tensor, ...others: Tensor[]): void {
  const shape = `${a.shape}`;
  if (numel(a) % 4 || others.some((t) => `${t.shape}` !== shape)) {
    throw new Error(
      `${what}: tensors [${[a, ...others].map((t) => `[${t.shape}]`).join(", ")}] must share ` +
        `one shape of a multiple of 4 elements`,
    );
  }
}

/** y = gelu_new(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). x, y: [M, N]. */
export function gelu(gpu: Gpu, x: Tensor, y: Tensor): Dispatch {
  checkSame("gelu: x, y", x, y);
  const n4 = numel(x) / 4;
  const bindings = { p: gpu.uniform([n4]), x, y };
  return gpu.dispatch(
    `gelu ${x.shape.join("x")}`,
    gpu.kernel(code, "gelu"),
    bindings,
    workgrid(n4, 64),
  );
}

/** dx = dy · gelu_new'(x). x, dy, dx: [M, N]. */
export function geluBackward(gpu: Gpu, x: Tensor, dy: Tensor, dx: Tensor): Dispatch {
  checkSame("geluBackward: x, dy, dx", x, dy, dx);
  const n4 = numel(x) / 4;
  const kernel = gpu.kernel(code, "gelu_backward");
  const bindings = { p: gpu.uniform([n4]), x, dy, dx };
  return gpu.dispatch(`gelu backward ${x.shape.join("x")}`, kernel, bindings, workgrid(n4, 64));
}
