// The widget's styles, adopted by its shadow root (a constructed stylesheet is not inline
// style, so a strict Content-Security-Policy without 'unsafe-inline' allows it). Logical
// properties (inline-start/end) make the same rules lay out right to left in Persian.
export const CSS = `
:host { all: initial; }
* { box-sizing: border-box; font-family: system-ui, -apple-system, "Segoe UI", Tahoma, "Vazirmatn", sans-serif; }
.root { position: fixed; bottom: 20px; z-index: 2147483000; font-size: 15px; line-height: 1.45; color: #1f2328; }
.root.right { right: 20px; } .root.left { left: 20px; }
.launcher { width: 56px; height: 56px; border-radius: 50%; border: 0; cursor: pointer; background: var(--xin-primary, #2456d6); color: #fff;
  box-shadow: 0 4px 14px rgba(0,0,0,.25); display: flex; align-items: center; justify-content: center; }
.launcher svg { width: 28px; height: 28px; fill: currentColor; }
.root.right .launcher { margin-left: auto; } .root.left .launcher { margin-right: auto; }
button:focus-visible, textarea:focus-visible { outline: 3px solid #ffbf47; outline-offset: 2px; }
.panel { width: min(370px, calc(100vw - 40px)); height: min(540px, calc(100vh - 110px)); margin-bottom: 12px; background: #fff; border-radius: 14px;
  box-shadow: 0 8px 30px rgba(0,0,0,.25); display: flex; flex-direction: column; overflow: hidden; }
.panel[hidden] { display: none; }
header { background: var(--xin-primary, #2456d6); color: #fff; padding: 12px 14px; display: flex; align-items: center; gap: 8px; }
header h2 { margin: 0; font-size: 16px; font-weight: 600; flex: 1; text-align: start; }
.close { background: transparent; border: 0; color: #fff; font-size: 22px; line-height: 1; cursor: pointer; padding: 2px 6px; border-radius: 6px; }
.banner { background: #fff4ce; color: #5c4400; padding: 8px 14px; font-size: 13px; text-align: start; border-bottom: 1px solid #f0dc8c; }
.banner.error { background: #ffe3e3; color: #7a1010; border-color: #f5b5b5; }
.banner[hidden] { display: none; }
.log { list-style: none; margin: 0; padding: 12px; flex: 1; overflow-y: auto; display: flex; flex-direction: column; gap: 8px; background: #f6f7f9; }
.msg { max-width: 85%; padding: 8px 11px; border-radius: 12px; white-space: pre-wrap; overflow-wrap: anywhere; text-align: start; }
.msg.bot { align-self: flex-start; background: #fff; border: 1px solid #e1e4e8; border-start-start-radius: 4px; }
.msg.me { align-self: flex-end; background: var(--xin-primary, #2456d6); color: #fff; border-start-end-radius: 4px; }
.msg.me.queued { opacity: .65; }
.msg.failed { background: #ffe3e3; color: #7a1010; border: 1px solid #f5b5b5; }
.msg .who { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
.msg .text { display: block; }
.msg .note { display: block; font-size: 12px; opacity: .85; margin-top: 2px; }
.msg.pending { color: #57606a; font-style: italic; }
form { display: flex; gap: 8px; padding: 10px; border-top: 1px solid #e1e4e8; background: #fff; }
textarea { flex: 1; resize: none; border: 1px solid #c9ced6; border-radius: 10px; padding: 8px 10px; font-size: 15px; min-height: 40px; max-height: 120px; color: inherit; background: #fff; text-align: start; }
.send { border: 0; border-radius: 10px; padding: 0 14px; background: var(--xin-primary, #2456d6); color: #fff; font-weight: 600; cursor: pointer; }
.send:disabled { opacity: .5; cursor: default; }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;
