import assert from "node:assert/strict";
import { test } from "node:test";
import { MAX_BACKOFF_MS, backoffMs, cursor, initial, nextToSend, reduce, waiting, type Event, type State } from "../src/state";
import { formatNumber, locale, texts } from "../src/i18n";

const run = (events: Event[], s: State = initial()) => events.reduce(reduce, s);
const online = (s: State = initial()) => reduce(s, { type: "reached" });

test("typed messages queue in order and are sent one at a time", () => {
  let s = online();
  s = run([{ type: "typed", text: "one", clientId: "a" }, { type: "typed", text: "two", clientId: "b" }], s);
  assert.deepEqual(s.outbox, ["a", "b"]);
  assert.equal(nextToSend(s)?.clientId, "a");
  s = reduce(s, { type: "sendStarted", clientId: "a" });
  assert.equal(nextToSend(s), null, "nothing else while one is in flight");
  // Starting the second before the first is accepted is refused: order is kept.
  assert.equal(reduce(s, { type: "sendStarted", clientId: "b" }), s);
  s = reduce(s, { type: "sendAccepted", clientId: "a", id: 17 });
  assert.equal(nextToSend(s)?.clientId, "b");
  assert.equal(s.items[0].id, 17);
  assert.equal(s.items[0].status, "sent");
});

test("the same client id typed twice is one message", () => {
  const s = run([{ type: "typed", text: "x", clientId: "a" }, { type: "typed", text: "x", clientId: "a" }]);
  assert.equal(s.items.length, 1);
  assert.deepEqual(s.outbox, ["a"]);
});

test("offline: typing queues, nothing is sent, and the queue goes out in order once back", () => {
  let s = online();
  s = reduce(s, { type: "unreachable" });
  assert.equal(s.connection, "offline");
  s = run([{ type: "typed", text: "first", clientId: "a" }, { type: "typed", text: "second", clientId: "b" }], s);
  assert.equal(nextToSend(s), null);
  assert.equal(waiting(s), 2);
  s = reduce(s, { type: "reached" });
  assert.equal(s.attempt, 0);
  const sent: string[] = [];
  for (let id = 1; nextToSend(s); id++) {
    const c = nextToSend(s)!.clientId!;
    sent.push(c);
    s = run([{ type: "sendStarted", clientId: c }, { type: "sendAccepted", clientId: c, id }], s);
  }
  assert.deepEqual(sent, ["a", "b"]);
  assert.equal(waiting(s), 0);
});

test("an interrupted send goes back to the head of the queue with its client id and counts a retry", () => {
  let s = online();
  s = run([{ type: "typed", text: "a", clientId: "a" }, { type: "typed", text: "b", clientId: "b" }, { type: "sendStarted", clientId: "a" }], s);
  s = run([{ type: "sendInterrupted", clientId: "a" }, { type: "unreachable" }], s);
  assert.equal(s.retries, 1);
  assert.equal(s.items[0].status, "queued");
  assert.equal(nextToSend(s), null, "not while offline");
  s = reduce(s, { type: "reached" });
  assert.equal(nextToSend(s)?.clientId, "a", "the same message, first again");
});

test("a message refused for what it is is marked and the queue moves on", () => {
  let s = online();
  s = run([{ type: "typed", text: "bad", clientId: "a" }, { type: "typed", text: "ok", clientId: "b" }, { type: "sendStarted", clientId: "a" }], s);
  s = reduce(s, { type: "sendRejected", clientId: "a", code: "invalid_text" });
  assert.equal(s.items[0].refusal, "invalid_text");
  assert.equal(nextToSend(s)?.clientId, "b");
});

test("a refusal of the widget stops sending", () => {
  let s = run([{ type: "typed", text: "x", clientId: "a" }]);
  s = reduce(s, { type: "refused", code: "origin_not_allowed" });
  assert.equal(s.refused, "origin_not_allowed");
  assert.equal(nextToSend(s), null);
});

test("polls merge answers, add history in id order, and move the cursor past what is settled", () => {
  let s = online();
  s = run([{ type: "typed", text: "q2", clientId: "a" }, { type: "sendStarted", clientId: "a" }, { type: "sendAccepted", clientId: "a", id: 20 }], s);
  s = reduce(s, {
    type: "polled",
    messages: [
      { id: 12, text: "old", answer: "old answer" },
      { id: 20, text: "q2", answer: null },
    ],
  });
  assert.deepEqual(s.items.map((i) => i.id), [12, 20]);
  assert.equal(s.after, 12, "20 has no answer yet");
  s = reduce(s, { type: "polled", messages: [{ id: 20, text: "q2", answer: "a2" }] });
  assert.equal(s.items[1].answer, "a2");
  assert.equal(s.after, 20);
  // A message the gateway gave up on settles too.
  s = run([{ type: "typed", text: "q3", clientId: "b" }, { type: "sendStarted", clientId: "b" }, { type: "sendAccepted", clientId: "b", id: 21 }], s);
  s = reduce(s, { type: "polled", messages: [{ id: 21, text: "q3", answer: null, failed: true }] });
  assert.equal(s.after, 21);
});

test("an answer seen in a poll before the send was acknowledged is not shown twice", () => {
  let s = online();
  s = run([{ type: "typed", text: "q", clientId: "a" }, { type: "sendStarted", clientId: "a" }], s);
  s = reduce(s, { type: "polled", messages: [{ id: 5, text: "q", answer: "ans" }] });
  s = reduce(s, { type: "sendAccepted", clientId: "a", id: 5 });
  assert.equal(s.items.length, 1);
  assert.equal(s.items[0].answer, "ans");
  assert.equal(s.items[0].clientId, "a");
});

test("the cursor never passes an unanswered message", () => {
  const items = [
    { key: "1", id: 1, text: "", answer: "x", status: "sent" as const },
    { key: "2", id: 2, text: "", status: "sent" as const },
    { key: "3", id: 3, text: "", answer: "y", status: "sent" as const },
  ];
  assert.equal(cursor(items, 0), 1);
  assert.equal(cursor([], 7), 7);
});

test("backoff doubles from 1 s with jitter and is bounded", () => {
  assert.equal(backoffMs(1, () => 0), 500);
  assert.equal(backoffMs(1, () => 1), 1000);
  assert.equal(backoffMs(2, () => 1), 2000);
  assert.equal(backoffMs(3, () => 1), 4000);
  for (const a of [6, 10, 100, 1e9]) {
    const high = backoffMs(a, () => 1);
    assert.equal(high, MAX_BACKOFF_MS);
    assert.ok(backoffMs(a, () => 0) >= MAX_BACKOFF_MS / 2);
  }
  assert.ok(backoffMs(0, () => 1) > 0);
});

test("locales: Persian is right to left with Persian digits; unknown locales are refused", () => {
  assert.equal(texts("fa").dir, "rtl");
  assert.equal(texts("en").dir, "ltr");
  assert.equal(formatNumber("fa", 2), "۲");
  assert.equal(formatNumber("en", 2), "2");
  assert.match(texts("fa").offline(formatNumber("fa", 2)), /۲/);
  assert.equal(locale("fa-IR"), "fa");
  assert.equal(locale("EN"), "en");
  assert.equal(locale("de"), null);
  assert.equal(locale(undefined), null);
});
