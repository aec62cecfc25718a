import assert from "node:assert/strict";
import { after, test } from "node:test";
import { JSDOM } from "jsdom";

// A real DOM (jsdom) for React to render into; jsdom loads no external scripts.
const dom = new JSDOM("<!doctype html><html><body><div id=app></div></body></html>", { url: "https://shop.example/" });
const g = globalThis as Record<string, unknown>;
g.window = dom.window;
g.document = dom.window.document;
for (const k of ["navigator", "CustomEvent", "Event", "MouseEvent", "HTMLElement", "Node", "HTMLIFrameElement"]) {
  Object.defineProperty(globalThis, k, { value: (dom.window as unknown as Record<string, unknown>)[k], configurable: true, writable: true });
}
g.IS_REACT_ACT_ENVIRONMENT = true;

const { act } = await import("react");
const { createRoot } = await import("react-dom/client");
const { XinWidgetProvider, scriptAttributes, useXinWidget } = await import("../src/index");

const settings = {
  src: "https://chat.acme.example/widget/embed.0123456789abcdef.js",
  integrity: "sha384-abc",
  channelUrl: "https://chat.acme.example/widget/web",
  locale: "fa" as const,
};

function Opener() {
  const w = useXinWidget();
  return <button onClick={() => w.open()}>help</button>;
}

test("the provider adds the script with its integrity and settings, and removes it with the widget", async () => {
  const root = createRoot(document.getElementById("app")!);
  await act(async () => root.render(<XinWidgetProvider {...settings}><Opener /></XinWidgetProvider>));
  assert.equal(document.querySelector("button")?.textContent, "help", "children are rendered");
  const scripts = document.querySelectorAll("script");
  assert.equal(scripts.length, 1);
  const s = scripts[0];
  assert.equal(s.getAttribute("src"), settings.src);
  assert.equal(s.getAttribute("integrity"), "sha384-abc");
  assert.equal(s.getAttribute("crossorigin"), "anonymous");
  assert.equal(s.getAttribute("data-channel-url"), settings.channelUrl);
  assert.equal(s.getAttribute("data-locale"), "fa");
  assert.equal(s.hasAttribute("data-user-id"), false, "anonymous without a signed-in user");

  // What embed.js would add; the hook talks to it with events.
  const host = document.createElement("div");
  host.setAttribute("data-xin-widget", "");
  document.body.appendChild(host);
  let opened = 0;
  host.addEventListener("xin-widget:open", () => opened++);
  await act(async () => document.querySelector("button")!.dispatchEvent(new dom.window.MouseEvent("click", { bubbles: true })));
  assert.equal(opened, 1);

  // New settings: the old script and widget go, a new script comes.
  await act(async () => root.render(<XinWidgetProvider {...settings} locale="en"><Opener /></XinWidgetProvider>));
  assert.equal(document.querySelectorAll("script").length, 1);
  assert.equal(document.querySelector("script")?.getAttribute("data-locale"), "en");
  assert.equal(document.querySelector("[data-xin-widget]"), null);

  await act(async () => root.unmount());
  assert.equal(document.querySelectorAll("script").length, 0, "nothing left behind");
});

test("a signed-in user needs both the id and the token", () => {
  const base = { src: "s", channelUrl: "c" };
  assert.deepEqual(scriptAttributes({ ...base, userId: "u-42" }), { "data-channel-url": "c" });
  assert.deepEqual(scriptAttributes({ ...base, userId: "u-42", identityToken: "v1.1.ab" }), {
    "data-channel-url": "c",
    "data-user-id": "u-42",
    "data-identity-token": "v1.1.ab",
  });
});

test("the hook outside the provider says so", async () => {
  const errors: unknown[] = [];
  const root = createRoot(document.createElement("div"), { onUncaughtError: (e) => errors.push(e) });
  try {
    await act(async () => root.render(<Opener />));
  } catch (e) {
    errors.push(e);
  }
  assert.match(errors.map(String).join(" "), /inside <XinWidgetProvider>/);
  await act(async () => root.unmount());
});

after(() => dom.window.close());
