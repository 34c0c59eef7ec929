// Small DOM helpers. Text always goes in through textContent: nothing the user or the
// API gives is ever parsed as HTML.

/** The element with this id (the page's ids are fixed in index.html). */
export function byId(id) {
  return document.getElementById(id);
}

/** A new element with properties (className, type, src, alt, ...) and text or child nodes. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    node[name] = value;
  }
  for (const child of children) {
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** Show a message in a (hidden by default) element. */
export function say(node, text) {
  node.textContent = text;
  node.hidden = false;
}

/** Hide an element and forget its text. */
export function quiet(node) {
  node.textContent = "";
  node.hidden = true;
}

/** Remove every child of an element. */
export function clear(node) {
  node.replaceChildren();
}
