// embed.js: the Xin web widget. A site adds one tag:
//   <script src="https://<gateway>/widget/embed.<hash>.js" integrity="sha384-…"
//     crossorigin="anonymous" data-channel-url="https://<gateway>/widget/<channel>" async></script>
// Optional attributes: data-locale (en, fa), data-color (#rrggbb), data-position (left, right),
// data-title, data-welcome, and for a user the site has signed in, data-user-id with
// data-identity-token (docs/widget.md). No dependencies, no inline script or style, no eval,
// and no request anywhere but the gateway named in data-channel-url.

import { Client, type Config, type Outcome } from "./client";
import { formatNumber, locale as parseLocale, texts, type Locale, type Texts } from "./i18n";
import { backoffMs, initial, nextToSend, reduce, waiting, type Event, type Item, type State } from "./state";
import { CSS } from "./styles";

interface Options {
  channelUrl: string;
  locale: Locale | null;
  color: string | null;
  position: "left" | "right" | null;
  title: string | null;
  welcome: string | null;
  userId: string | null;
  identityToken: string | null;
}

const COLOR = /^#[0-9a-fA-F]{6}$/;
const POLL_WAIT_SECONDS = 25;

function options(el: HTMLScriptElement): Options | null {
  const d = el.dataset;
  const url = (d.channelUrl ?? "").replace(/\/+$/, "");
  if (!/^https?:\/\/[^/]+\/widget\/[^/?#]+$/.test(url)) {
    console.error("xin widget: data-channel-url must be https://<gateway>/widget/<channel>");
    return null;
  }
  const position = d.position === "left" || d.position === "right" ? d.position : null;
  return {
    channelUrl: url,
    locale: parseLocale(d.locale),
    color: d.color && COLOR.test(d.color) ? d.color : null,
    position,
    title: d.title || null,
    welcome: d.welcome || null,
    userId: d.userId || null,
    identityToken: d.identityToken || null,
  };
}

function randomId(): string {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** The browser's visitor id for this channel, kept in localStorage (in memory where storage is off). */
function visitorId(channelUrl: string): string {
  const key = `xin-visitor:${channelUrl}`;
  try {
    const v = localStorage.getItem(key);
    if (v && /^[0-9a-f]{32}$/.test(v)) return v;
    const fresh = randomId();
    localStorage.setItem(key, fresh);
    return fresh;
  } catch {
    return randomId();
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

const ICON =
  "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2zm3 6a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3z";

class Widget {
  private state: State = initial();
  private readonly client: Client;
  private session: { token: string; expiresAt: number } | null = null;
  private started = false;
  private mounted = false;
  private readonly waiters = new Set<() => void>();
  private locale: Locale = "en";
  private t: Texts = texts("en");
  private config: Config = {};
  private readonly host: HTMLElement;
  private readonly root: HTMLDivElement;
  private readonly launcher: HTMLButtonElement;
  private readonly panel: HTMLElement;
  private readonly heading: HTMLHeadingElement;
  private readonly closeButton: HTMLButtonElement;
  private readonly banner: HTMLDivElement;
  private readonly log: HTMLOListElement;
  private readonly input: HTMLTextAreaElement;
  private readonly label: HTMLLabelElement;
  private readonly sendButton: HTMLButtonElement;

  constructor(private readonly o: Options) {
    this.client = new Client(o.channelUrl);
    this.host = el("div", { "data-xin-widget": "" });
    const shadow = this.host.attachShadow({ mode: "open" });
    if ("adoptedStyleSheets" in shadow && typeof CSSStyleSheet !== "undefined" && "replaceSync" in CSSStyleSheet.prototype) {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      shadow.adoptedStyleSheets = [sheet];
    } else {
      shadow.append(el("style", {}, CSS));
    }
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", ICON);
    svg.append(path);
    this.launcher = el("button", { type: "button", class: "launcher", "aria-haspopup": "dialog", "aria-expanded": "false", "aria-controls": "xin-panel" }, svg);
    this.heading = el("h2", { id: "xin-title" });
    this.closeButton = el("button", { type: "button", class: "close" }, "×");
    this.banner = el("div", { class: "banner", role: "status", "aria-live": "polite", hidden: "" });
    this.log = el("ol", { class: "log", role: "log", "aria-live": "polite", "aria-relevant": "additions text" });
    this.label = el("label", { class: "sr-only", for: "xin-input" });
    this.input = el("textarea", { id: "xin-input", rows: "1", dir: "auto", maxlength: "4096" });
    this.sendButton = el("button", { type: "submit", class: "send" });
    const form = el("form", {}, this.label, this.input, this.sendButton);
    this.panel = el(
      "section",
      { id: "xin-panel", class: "panel", role: "dialog", "aria-modal": "false", "aria-labelledby": "xin-title", hidden: "" },
      el("header", {}, this.heading, this.closeButton),
      this.banner,
      this.log,
      form,
    );
    this.root = el("div", { class: "root" }, this.panel, this.launcher);
    shadow.append(this.root);

    // For the page's own buttons (and the React wrapper's hook).
    this.host.addEventListener("xin-widget:open", () => this.panel.hidden && this.open());
    this.host.addEventListener("xin-widget:close", () => !this.panel.hidden && this.close());
    this.launcher.addEventListener("click", () => (this.panel.hidden ? this.open() : this.close()));
    this.closeButton.addEventListener("click", () => this.close());
    this.panel.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        e.preventDefault();
        this.close();
      }
    });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.submit();
      }
    });
    this.applyLocale(o.locale ?? "en");
    if (o.color) this.host.style.setProperty("--xin-primary", o.color);
    this.render();
  }

  mount() {
    document.body.append(this.host);
    this.mounted = true;
  }

  /** Taken off the page (a single-page app unmounting it): every loop stops. */
  private get gone(): boolean {
    return this.mounted && !this.host.isConnected;
  }

  private applyLocale(l: Locale) {
    this.locale = l;
    this.t = texts(l);
    this.panel.setAttribute("dir", this.t.dir);
    this.panel.setAttribute("lang", l);
    this.launcher.setAttribute("aria-label", this.panel.hidden ? this.t.open : this.t.close);
    this.closeButton.setAttribute("aria-label", this.t.close);
    this.label.textContent = this.t.input;
    this.input.setAttribute("placeholder", this.t.input);
    this.sendButton.textContent = this.t.send;
    this.log.setAttribute("aria-label", this.t.conversation);
    const side = this.o.position ?? (this.t.dir === "rtl" ? "left" : "right");
    this.root.className = `root ${side}`;
    this.heading.textContent = this.o.title ?? this.config.title ?? this.t.title;
  }

  open() {
    this.panel.hidden = false;
    this.launcher.setAttribute("aria-expanded", "true");
    this.launcher.setAttribute("aria-label", this.t.close);
    if (this.input.disabled) this.closeButton.focus();
    else this.input.focus();
    if (!this.started) {
      this.started = true;
      void this.run();
    }
  }

  close() {
    this.panel.hidden = true;
    this.launcher.setAttribute("aria-expanded", "false");
    this.launcher.setAttribute("aria-label", this.t.open);
    this.launcher.focus();
  }

  private dispatch(e: Event) {
    this.state = reduce(this.state, e);
    this.host.dataset.connection = this.state.connection;
    this.host.dataset.retries = String(this.state.retries);
    this.render();
    const waiting = Array.from(this.waiters);
    this.waiters.clear();
    for (const w of waiting) w();
  }

  /** Waits `ms`, or less when something happens (a message typed, the connection back). */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.waiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }

  private submit() {
    const text = this.input.value.trim();
    if (!text || this.state.refused) return;
    this.input.value = "";
    this.dispatch({ type: "typed", text, clientId: randomId() });
  }

  /** Turns an outcome into events; true when the caller may go on. */
  private async handle<T>(r: Outcome<T>): Promise<T | null> {
    if (r.kind === "ok") {
      if (this.state.connection !== "online") this.dispatch({ type: "reached" });
      return r.value;
    }
    if (r.kind === "unreachable") {
      this.dispatch({ type: "unreachable" });
      await sleep(backoffMs(this.state.attempt));
      return null;
    }
    if (this.state.connection !== "online") this.dispatch({ type: "reached" });
    if (r.code === "origin_not_allowed" || r.code === "unknown_channel" || r.code === "channel_not_configured" || r.code === "anonymous_visitors_not_allowed" || r.status === 403) {
      this.dispatch({ type: "refused", code: r.code });
    } else if (r.code === "invalid_session" || r.code === "missing_session") {
      this.session = null;
    } else {
      await sleep(r.retryAfter * 1000);
    }
    return null;
  }

  private async run() {
    // The channel's theme and whether visitors may chat anonymously.
    for (;;) {
      const c = await this.handle(await this.client.config());
      if (this.state.refused || this.gone) return;
      if (c) {
        this.config = c;
        if (c.primary_color && COLOR.test(c.primary_color) && !this.o.color) this.host.style.setProperty("--xin-primary", c.primary_color);
        this.applyLocale(this.o.locale ?? parseLocale(c.locale) ?? "en");
        this.render();
        break;
      }
    }
    void this.sender();
    await this.poller();
  }

  private async ensureSession(): Promise<string | null> {
    while (!this.session || this.session.expiresAt - Date.now() < 30_000) {
      const body =
        this.o.userId && this.o.identityToken
          ? { user_id: this.o.userId, identity_token: this.o.identityToken }
          : { visitor_id: visitorId(this.o.channelUrl) };
      const s = await this.handle(await this.client.session(body));
      if (this.state.refused || this.gone) return null;
      if (s) this.session = s;
    }
    return this.session.token;
  }

  private async poller() {
    for (;;) {
      const token = await this.ensureSession();
      if (!token) return;
      const asked = this.state.after;
      const known = JSON.stringify(this.state.items.map((i) => [i.id, i.answer, i.failed]));
      const r = await this.handle(await this.client.poll(token, asked, POLL_WAIT_SECONDS));
      if (this.state.refused || this.gone) return;
      if (!r) continue;
      this.dispatch({ type: "polled", messages: r.messages ?? [] });
      // A reply with nothing new (answers out of order while an earlier one is pending):
      // the next poll would return at once, so wait a second first.
      const now = JSON.stringify(this.state.items.map((i) => [i.id, i.answer, i.failed]));
      if (now === known && this.state.after === asked) await this.pause(1000);
    }
  }

  private async sender() {
    for (;;) {
      const item = nextToSend(this.state);
      if (this.state.refused || this.gone) return;
      if (!item || !item.clientId) {
        // Offline: try to get through again once the backoff has passed.
        if (this.state.connection === "offline" && this.state.outbox.length) {
          await sleep(backoffMs(this.state.attempt));
          const head = this.state.items.find((i) => i.clientId === this.state.outbox[0]);
          if (head?.clientId) await this.sendOne(head);
        } else {
          await this.pause(60_000);
        }
        continue;
      }
      await this.sendOne(item);
    }
  }

  private async sendOne(item: Item) {
    const clientId = item.clientId as string;
    const token = await this.ensureSession();
    if (!token) return;
    this.dispatch({ type: "sendStarted", clientId });
    const r = await this.client.send(token, item.text, clientId);
    if (r.kind === "ok") {
      this.dispatch({ type: "sendAccepted", clientId, id: r.value.message_id });
      return;
    }
    if (r.kind === "refused" && r.status === 400) {
      this.dispatch({ type: "sendRejected", clientId, code: r.code });
      return;
    }
    this.dispatch({ type: "sendInterrupted", clientId });
    await this.handle(r);
  }

  private render() {
    const s = this.state;
    const t = this.t;
    // The banner: refused, offline (with how many wait), or nothing.
    if (s.refused) {
      this.banner.hidden = false;
      this.banner.className = "banner error";
      // The site's identity token for its user was refused (expired, say): the page has to
      // sign a new one; otherwise this page may not use the chat at all.
      this.banner.textContent = /identity/.test(s.refused) ? t.signIn : t.refused;
    } else if (s.connection === "offline") {
      this.banner.hidden = false;
      this.banner.className = "banner";
      this.banner.textContent = t.offline(formatNumber(this.locale, waiting(s)));
    } else {
      this.banner.hidden = true;
      this.banner.textContent = "";
    }
    if (s.refused !== null && !this.input.disabled) {
      // Nothing to type into: the focus moves to the close button, still inside the dialog.
      const hadFocus = (this.host.shadowRoot as ShadowRoot).activeElement === this.input;
      this.input.disabled = true;
      this.sendButton.disabled = true;
      if (hadFocus) this.closeButton.focus();
    }
    const lines: HTMLLIElement[] = [];
    const welcome = this.o.welcome ?? this.config.welcome_message ?? t.welcome;
    lines.push(this.bubble("bot", welcome, t.assistant, "welcome"));
    for (const i of s.items) {
      const mine = this.bubble("me", i.text, t.you, i.key);
      if (i.status !== "sent") mine.classList.add("queued");
      if (i.refusal) {
        mine.classList.add("failed");
        mine.append(el("span", { class: "note" }, t.notSent));
      }
      lines.push(mine);
      if (i.answer !== undefined) lines.push(this.bubble("bot", i.answer, t.assistant, `${i.key}:a`));
      else if (i.failed && !i.refusal) lines.push(this.bubble("bot failed", t.noAnswer, t.assistant, `${i.key}:a`));
      else if (i.status === "sent") lines.push(this.bubble("bot pending", t.thinking, t.assistant, `${i.key}:p`));
    }
    // Replace only what changed, so screen readers announce only new lines.
    const keys = lines.map((l) => l.dataset.key + "|" + l.textContent + "|" + l.className);
    const old = Array.from(this.log.children) as HTMLLIElement[];
    let same = 0;
    while (same < old.length && same < lines.length && old[same].dataset.sig === keys[same]) same++;
    for (const o of old.slice(same)) o.remove();
    for (let n = same; n < lines.length; n++) {
      lines[n].dataset.sig = keys[n];
      this.log.append(lines[n]);
    }
    if (same < lines.length) this.log.scrollTop = this.log.scrollHeight;
  }

  private bubble(kind: string, text: string, who: string, key: string): HTMLLIElement {
    const li = el("li", { class: `msg ${kind}`, "data-key": key }, el("span", { class: "who" }, `${who}: `));
    // dir=auto on a block of its own per message: an English sentence in a Persian
    // conversation (or the other way round) is a paragraph in its own direction, its
    // punctuation and numbers included.
    li.append(el("span", { dir: "auto", class: "text" }, text));
    return li;
  }
}

(() => {
  const script = document.currentScript as HTMLScriptElement | null;
  if (!script) {
    console.error("xin widget: load embed.js with a classic <script> tag (not a module)");
    return;
  }
  const o = options(script);
  if (!o) return;
  const w = new Widget(o);
  if (document.body) w.mount();
  else document.addEventListener("DOMContentLoaded", () => w.mount(), { once: true });
})();
