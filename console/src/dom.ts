// A few lines instead of a framework: elements built from tag, attributes and children.

export type Child = Node | string | number | null | undefined | false | Child[];
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Attrs | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function s(tag: string, attrs?: Attrs | null, ...children: Child[]): SVGElement {
  const el = document.createElementNS(SVG_NS, tag) as SVGElement;
  if (attrs) setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el: Element, attrs: Attrs): void {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "class") {
      el.setAttribute("class", String(v));
    } else if (v === true) {
      el.setAttribute(k, "");
    } else {
      el.setAttribute(k, String(v));
    }
  }
}

export function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false || c === "") continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(text(el, String(c)));
  }
}

// Text from the server is data (docs/CONSOLE.md, "Text from the server"): a string child goes
// in as text, never as markup, in a <bdi> of its own, an isolate that takes its direction from
// its first strong character. Unicode's bidirectional controls in a value (an unterminated
// U+202E RIGHT-TO-LEFT OVERRIDE reverses the rest of its paragraph), and Arabic or Hebrew
// letters, then reorder nothing outside it: not the unit code after a name, not the words
// after a title. Every string child gets this, the labels too, so that no view can forget it;
// what no element can isolate is a value written into a longer string (`${name} (${code})` is
// one text, the code after the name's override): give the parts as children.
//
// A string child is taken for a single-line value (a title, a name): its bidirectional marks,
// embeddings, overrides and isolates, C1 controls and U+2028/U+2029 are shown by name
// (<U+202E>), as cluectl shows them. The server refuses them in such fields now, so one shown
// is in a row stored before that, and the reader sees it is there. Free text (summaries,
// notes, reasons), which may rightly carry these marks, goes through prose().

const SHOWN_BY_NAME = /[\u0080-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

function nameOf(ch: string): string {
  return `<U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}>`;
}

/** s with its bidirectional controls, C1 controls and U+2028/U+2029 written as <U+XXXX>: for attributes. */
export function named(s: string): string {
  return s.replace(SHOWN_BY_NAME, nameOf);
}

/** A string child of parent: a <bdi> with the controls shown by name; only the named text
 * where no element may go (an <option>, a <title>, SVG); a <textarea>'s text as it is, to edit. */
function text(parent: Node, s: string): Node {
  if (parent instanceof HTMLTextAreaElement) return document.createTextNode(s);
  if (!(parent instanceof HTMLElement) || parent instanceof HTMLOptionElement || parent instanceof HTMLTitleElement) return document.createTextNode(named(s));
  const bdi = document.createElement("bdi");
  let at = 0;
  for (const m of s.matchAll(SHOWN_BY_NAME)) {
    if (m.index > at) bdi.append(s.slice(at, m.index));
    const ctl = document.createElement("span");
    ctl.className = "ctl";
    ctl.textContent = nameOf(m[0]);
    bdi.append(ctl);
    at = m.index + m[0].length;
  }
  if (at < s.length) bdi.append(s.slice(at));
  return bdi;
}

/**
 * Free text from the server (a summary, a note, a reason, a case's basis), kept as written,
 * bidirectional controls and all: an inline block of its own, so nothing in it reaches the
 * text around it, in which each line takes its direction from its first strong character
 * (unicode-bidi: plaintext) and an override ends with its line.
 */
export function prose(s: string): HTMLElement {
  const el = document.createElement("span");
  el.className = "prose";
  el.dir = "auto";
  el.textContent = s;
  return el;
}

/** The items with sep between them, each item a child of its own. */
export function joined(items: Child[], sep: string): Child[] {
  return items.flatMap((x, i) => (i ? [sep, x] : [x]));
}

export function clear(el: Element): void {
  while (el.firstChild) el.removeChild(el.firstChild);
}

let seq = 0;
/** A fresh id for label/control pairs. */
export function uid(prefix: string): string {
  return `${prefix}-${++seq}`;
}

/** A labelled control: label, then the control, with for/id joined. */
export function field(label: string, control: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement, hint?: string): HTMLElement {
  if (!control.id) control.id = uid("f");
  const parts: Child[] = [h("label", { for: control.id }, label), control];
  if (hint) {
    const hid = uid("hint");
    control.setAttribute("aria-describedby", hid);
    parts.push(h("small", { id: hid, class: "hint" }, hint));
  }
  return h("div", { class: "field" }, ...parts);
}
