// Drives the checkout page in headless Chromium (Debian's /usr/bin/chromium) with playwright-core.
// Usage: node checkout_browser.mjs <page url> <screenshot path> [--wallet <anvil rpc url> <from address> [--no-wait]]
//        node checkout_browser.mjs <page url> <screenshot path> --inspect
// --inspect (a phone-sized viewport, no payment): prints "INSPECT <json>" (the page's wallet parts,
// whether TON Connect loaded and whether anything is wider than the card) and exits 0 unless the
// page had errors (a CSP violation is one).
// Prints "READY <state>" once the page shows the payment, then "STATE <s>" on every change,
// and exits 0 after the page shows "credited" (1 on a timeout or a page error).
// With --wallet, an EIP-1193 provider is injected before the page loads and announced by EIP-6963
// ("Anvil test wallet"): it answers eth_requestAccounts with <from address> and forwards every
// other request to anvil (whose dev accounts are unlocked) through page.exposeFunction, i.e. the
// JSON-RPC call is made here, on the node side. The script clicks "Pay with your wallet", prints
// "TX <hash>" and "RPC <methods in order>"; with --no-wait it exits 0 right after the TX line.
import { chromium } from "playwright-core";

const [url, shot, ...rest] = process.argv.slice(2);
const inspect = rest[0] === "--inspect";
const wallet = rest[0] === "--wallet" ? { rpc: rest[1], from: rest[2], wait: rest[3] !== "--no-wait" } : null;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
let code = 1;
try {
  const page = await browser.newPage(inspect ? { viewport: { width: 360, height: 800 } } : {});
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() !== "error" || m.text().startsWith("Failed to load resource")) return;
    // TON Connect fetches its wallet list from config.ton.org (falling back to a built-in one):
    // the test machine is offline, so that fetch fails; anything else is an error
    if (inspect && m.text().startsWith("[TON_CONNECT_SDK]") && m.text().includes("Failed to fetch")) {
      console.log("OFFLINE " + m.text().split("\n")[0]);
      return;
    }
    errors.push(m.text());
  });
  // every response the page needs must succeed (the browser's own favicon probe aside)
  page.on("response", (r) => {
    if (r.status() >= 400 && !r.url().endsWith("/favicon.ico")) errors.push(r.status() + " " + r.url());
  });
  const rpcs = [];
  if (wallet) {
    let id = 0;
    await page.exposeFunction("__creditbridgeAnvil", async (method, params) => {
      rpcs.push(method);
      const r = await fetch(wallet.rpc, { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: ++id, method, params }) });
      return await r.json();  // {result} or {error: {code, message}}
    });
    await page.addInitScript((from) => {
      const provider = {
        async request({ method, params }) {
          if (method === "eth_requestAccounts" || method === "eth_accounts") {
            await window.__creditbridgeAnvil(method, []);  // recorded (anvil answers its own list)
            return [from];
          }
          const r = await window.__creditbridgeAnvil(method, params || []);
          if (r.error) { const e = new Error(r.error.message); e.code = r.error.code; throw e; }
          return r.result;
        },
        on() {}, removeListener() {},
      };
      const info = Object.freeze({ uuid: "5b8a0c1e-6f1c-4e49-9f0a-1c2b3d4e5f60", name: "Anvil test wallet",
        icon: "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='24' height='24'%3E%3Crect width='24' height='24' fill='%23f60'/%3E%3C/svg%3E",
        rdns: "test.creditbridge.anvil" });
      const announce = () => window.dispatchEvent(new CustomEvent("eip6963:announceProvider",
        { detail: Object.freeze({ info, provider }) }));
      window.addEventListener("eip6963:requestProvider", announce);
      announce();
    }, wallet.from);
  }
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("state").dataset.state !== "");
  // the QR code image is requested once the first status arrives: wait for it to load
  const qrOk = await page.waitForFunction(() => {
    const q = document.getElementById("qr");
    return q.getAttribute("src") && q.complete && q.naturalWidth > 0;
  }, null, { timeout: 20000 }).then(() => true, () => false);
  console.log("READY " + (await page.textContent("#state")) + " qr=" + qrOk + " amount=" + (await page.textContent("#amount-base")));
  if (inspect) {
    await page.waitForTimeout(1500);  // TON Connect renders its button asynchronously
    const facts = await page.evaluate(() => {
      const main = document.querySelector("main"), box = main.getBoundingClientRect();
      // an element past the card's right edge, or whose content (a long unbroken line) overflows it
      const wide = [...main.querySelectorAll("*")].filter((el) => el.offsetParent !== null &&
        (el.getBoundingClientRect().right > box.right + 1 ||
         (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).display !== "inline")))
        .map((el) => el.id || el.tagName);
      if (main.scrollWidth > main.clientWidth + 1) wide.push("main");
      const shown = (id) => !!document.getElementById(id) && document.getElementById(id).offsetParent !== null;
      return { family: document.body.dataset.family, tonconnect: !!window.TON_CONNECT_UI,
               tonButton: (document.getElementById("ton-connect")?.childElementCount || 0) > 0,
               wallet: shown("pay-wallet"), transfer: shown("transfer"), wide: wide,
               to: document.getElementById("t-to")?.textContent, comment: document.getElementById("t-comment")?.textContent };
    });
    console.log("INSPECT " + JSON.stringify(facts));
    code = 0;
  }
  if (wallet) {
    await page.getByRole("button", { name: "Pay with your wallet" }).click();
    const tx = await page.waitForFunction(() => {
      const s = document.getElementById("wallet-status");
      return s.dataset.tx || (s.dataset.kind === "error" ? "ERROR " + s.textContent : "");
    }, null, { timeout: 30000 }).then((h) => h.jsonValue(), (e) => "ERROR " + e);
    console.log((tx.startsWith("ERROR") ? "" : "TX ") + tx);
    console.log("RPC " + rpcs.join(","));
    if (tx.startsWith("ERROR")) throw new Error(tx);
    if (!wallet.wait) code = 0;
  }
  let last = "";
  const deadline = Date.now() + 150000;
  while (!inspect && code !== 0 && Date.now() < deadline) {
    const s = await page.textContent("#state");
    if (s !== last) { console.log("STATE " + s + " | " + (await page.textContent("#message"))); last = s; }
    if (s === "credited") { code = 0; break; }
    await page.waitForTimeout(250);
  }
  console.log("SETTLEMENT " + (await page.textContent("#settlement")));
  if (shot) await page.screenshot({ path: shot, fullPage: true });
  if (errors.length) { console.log("ERRORS " + errors.join(" | ")); code = 1; }
} catch (e) {
  console.log("FAILED " + e);
} finally {
  await browser.close();
}
process.exit(code);
