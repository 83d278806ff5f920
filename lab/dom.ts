/**
 * The slice of the browser's DOM that the lab page uses, typed here so that the page checks
 * with the rest of the project (whose type checks run without the DOM library).
 *
 * @module
 */

/** Where the pointer is in a mouse event. */
export interface MouseInfo {
  offsetX: number;
  offsetY: number;
  clientX: number;
  clientY: number;
}

/** The calls of a 2D canvas context the page makes. */
export interface Canvas2D {
  fillStyle: string;
  fillRect(x: number, y: number, width: number, height: number): void;
}

/** A text node, whose text grows as tokens stream. */
export interface TextNode {
  data: string;
}

/** An element: the properties of inputs, selects, buttons, progress bars and canvases used. */
export interface El {
  textContent: string | null;
  innerHTML: string;
  hidden: boolean;
  className: string;
  /** An input's, select's or progress bar's value (a progress bar's as a number string). */
  value: string;
  checked: boolean;
  disabled: boolean;
  width: number;
  height: number;
  style: Record<string, string>;
  onclick: (() => void) | null;
  onchange: (() => void) | null;
  onmousemove: ((event: MouseInfo) => void) | null;
  onmouseleave: (() => void) | null;
  append(...nodes: (El | TextNode)[]): void;
  click(): void;
  getContext(kind: "2d"): Canvas2D | null;
}

/** The document's calls the page makes. */
export interface Doc {
  title: string;
  getElementById(id: string): El | null;
  createElement(tag: string): El;
  createTextNode(text: string): TextNode;
}

const page = globalThis as unknown as { document: Doc; location: { href: string; search: string } };

/** The page's document. */
export const doc: Doc = page.document;

/** The page's address: its URL and query string. */
export const pageLocation: { href: string; search: string } = page.location;

/** The element with `id`; throws naming it when the page has none. */
export function byId(id: string): El {
  const el = doc.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el;
}
