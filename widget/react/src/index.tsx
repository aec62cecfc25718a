// @xin/widget-react: loads Xin's web chat widget (embed.js) into a React app. Wrap the app
// (or the pages that should have the chat) in <XinWidgetProvider>; the script is added to
// the document once mounted and removed, with the widget, when unmounted or when a setting
// changes. Values come from the Channel's status (kubectl get channel <name> -o
// jsonpath='{.status.widget}'): scriptUrl, integrity and channelUrl.

import { createContext, createElement, useContext, useEffect, useMemo, type ReactNode } from "react";

export interface XinWidgetSettings {
  /** The widget's script: the Channel's `status.widget.scriptUrl`. */
  src: string;
  /** Its Subresource Integrity value: `status.widget.integrity`. */
  integrity?: string;
  /** The channel's widget endpoints: `status.widget.channelUrl`. */
  channelUrl: string;
  /** Language of the widget's own texts (the channel's theme decides when absent). */
  locale?: "en" | "fa";
  /** Primary colour, `#rrggbb` (overrides the theme). */
  color?: string;
  /** Side of the page (the end side of the page's direction by default). */
  position?: "left" | "right";
  /** Panel title (overrides the theme). */
  title?: string;
  /** First message of an empty conversation (overrides the theme). */
  welcome?: string;
  /**
   * A user the site has signed in: their id and an identity token the site's server signed
   * for them (docs/widget.md). Without them the visitor is anonymous.
   */
  userId?: string;
  identityToken?: string;
}

export interface XinWidgetApi {
  /** Opens the chat panel (once the widget is on the page). */
  open(): void;
  /** Closes it. */
  close(): void;
}

const HOST = "[data-xin-widget]";

function send(kind: "open" | "close") {
  document.querySelector(HOST)?.dispatchEvent(new CustomEvent(`xin-widget:${kind}`));
}

const api: XinWidgetApi = { open: () => send("open"), close: () => send("close") };
const Context = createContext<XinWidgetApi | null>(null);

/** The `data-*` attributes of the script tag for `s`. */
export function scriptAttributes(s: XinWidgetSettings): Record<string, string> {
  const a: Record<string, string> = { "data-channel-url": s.channelUrl };
  if (s.locale) a["data-locale"] = s.locale;
  if (s.color) a["data-color"] = s.color;
  if (s.position) a["data-position"] = s.position;
  if (s.title) a["data-title"] = s.title;
  if (s.welcome) a["data-welcome"] = s.welcome;
  if (s.userId && s.identityToken) {
    a["data-user-id"] = s.userId;
    a["data-identity-token"] = s.identityToken;
  }
  return a;
}

export function XinWidgetProvider(props: XinWidgetSettings & { children?: ReactNode }) {
  const { children, ...settings } = props;
  const key = JSON.stringify(settings);
  const s = useMemo(() => JSON.parse(key) as XinWidgetSettings, [key]);
  useEffect(() => {
    const script = document.createElement("script");
    script.src = s.src;
    script.async = true;
    if (s.integrity) {
      script.setAttribute("integrity", s.integrity);
      // A cross-origin script with an integrity value is fetched with CORS.
      script.setAttribute("crossorigin", "anonymous");
    }
    for (const [k, v] of Object.entries(scriptAttributes(s))) script.setAttribute(k, v);
    document.body.appendChild(script);
    return () => {
      script.remove();
      // The widget stops when its element leaves the page.
      document.querySelectorAll(HOST).forEach((e) => e.remove());
    };
  }, [s]);
  return createElement(Context.Provider, { value: api }, children);
}

/** Open or close the widget from a component inside the provider. */
export function useXinWidget(): XinWidgetApi {
  const v = useContext(Context);
  if (!v) throw new Error("useXinWidget must be used inside <XinWidgetProvider>");
  return v;
}
