// The widget's own texts. Persian is written right to left; numbers are formatted for the
// locale (Persian digits in Persian).

export type Locale = "en" | "fa";

export interface Texts {
  dir: "ltr" | "rtl";
  open: string;
  close: string;
  title: string;
  welcome: string;
  input: string;
  send: string;
  conversation: string;
  you: string;
  assistant: string;
  thinking: string;
  offline: (waiting: string) => string;
  notSent: string;
  noAnswer: string;
  refused: string;
  signIn: string;
}

const en: Texts = {
  dir: "ltr",
  open: "Open chat",
  close: "Close chat",
  title: "Chat with us",
  welcome: "Hi! Ask us anything.",
  input: "Your message",
  send: "Send",
  conversation: "Conversation",
  you: "You",
  assistant: "Assistant",
  thinking: "Thinking…",
  offline: (n) =>
    n === "0"
      ? "You are offline. Messages you write will be sent when the connection is back."
      : `You are offline. ${n} message(s) will be sent when the connection is back.`,
  notSent: "Not sent",
  noAnswer: "Sorry, no answer could be given. Please try again later.",
  refused: "This chat is not available on this site.",
  signIn: "Your sign-in has expired. Reload the page to chat.",
};

const fa: Texts = {
  dir: "rtl",
  open: "باز کردن گفتگو",
  close: "بستن گفتگو",
  title: "گفتگو با ما",
  welcome: "سلام! هر سؤالی دارید بپرسید.",
  input: "پیام شما",
  send: "ارسال",
  conversation: "گفتگو",
  you: "شما",
  assistant: "دستیار",
  thinking: "در حال فکر کردن…",
  offline: (n) =>
    n === "۰"
      ? "شما آفلاین هستید. پیام‌هایتان پس از برقراری اتصال ارسال می‌شوند."
      : `شما آفلاین هستید. ${n} پیام پس از برقراری اتصال ارسال می‌شود.`,
  notSent: "ارسال نشد",
  noAnswer: "متأسفیم، پاسخی داده نشد. لطفاً بعداً دوباره امتحان کنید.",
  refused: "این گفتگو روی این سایت در دسترس نیست.",
  signIn: "ورود شما منقضی شده است. برای گفتگو صفحه را دوباره بارگذاری کنید.",
};

export function locale(value: string | null | undefined): Locale | null {
  const v = (value ?? "").trim().toLowerCase().split(/[-_]/)[0];
  return v === "fa" || v === "en" ? v : null;
}

export function texts(l: Locale): Texts {
  return l === "fa" ? fa : en;
}

export function formatNumber(l: Locale, n: number): string {
  return new Intl.NumberFormat(l === "fa" ? "fa-IR" : "en-US").format(n);
}
