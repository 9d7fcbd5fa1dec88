// Drives the checkout page in headless Chromium (Debian's /usr/bin/chromium) with playwright-core.
// Usage: node checkout_browser.mjs <page url> <screenshot path>
// Prints "READY <state>" once the page shows the payment, then "STATE <s>" on every change,
// and exits 0 after the page shows "credited" (1 on a timeout or a page error).
import { chromium } from "playwright-core";

const [url, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
let code = 1;
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text());
  });
  // every response the page needs must succeed (the browser's own favicon probe aside)
  page.on("response", (r) => {
    if (r.status() >= 400 && !r.url().endsWith("/favicon.ico")) errors.push(r.status() + " " + r.url());
  });
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("state").dataset.state !== "");
  // the QR code image is requested once the first status arrives: wait for it to load
  const qrOk = await page.waitForFunction(() => {
    const q = document.getElementById("qr");
    return q.getAttribute("src") && q.complete && q.naturalWidth > 0;
  }, null, { timeout: 20000 }).then(() => true, () => false);
  console.log("READY " + (await page.textContent("#state")) + " qr=" + qrOk + " amount=" + (await page.textContent("#amount-base")));
  let last = "";
  const deadline = Date.now() + 150000;
  while (Date.now() < deadline) {
    const s = await page.textContent("#state");
    if (s !== last) { console.log("STATE " + s + " | " + (await page.textContent("#message"))); last = s; }
    if (s === "credited") { code = 0; break; }
    await page.waitForTimeout(250);
  }
  console.log("SETTLEMENT " + (await page.textContent("#settlement")));
  if (shot) await page.screenshot({ path: shot, fullPage: true });
  if (errors.length) { console.log("ERRORS " + errors.join(" | ")); code = 1; }
} finally {
  await browser.close();
}
process.exit(code);
