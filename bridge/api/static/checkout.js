// creditbridge checkout: live status of one payment, polled from the JSON API.
"use strict";
(function () {
  const id = location.pathname.split("/").filter(Boolean)[1];
  const $ = (x) => document.getElementById(x);
  const DECIMALS = { ETH: 18, DOT: 10, KSM: 12, TON: 9 };
  // expired and late are not final: a payment made after the expiry may still be credited at
  // a fresh quote (late -> credited), so the page keeps watching
  const FINAL = new Set(["credited", "invalid"]);
  const CLOSED = new Set(["credited", "invalid", "expired", "late"]);  // no countdown
  const MESSAGES = {
    new: "Waiting for your payment.",
    seen: "Payment seen on the chain; waiting for it to become final.",
    underpaid: "Underpaid: send the rest before the payment expires, or you are credited only for what you paid.",
    confirmed: "Payment confirmed; the committee is crediting it.",
    overpaid: "Overpaid: you are credited the quoted credits and the excess is refunded to the address you paid from.",
    credited: "Credited. Thank you!",
    expired: "This payment expired before any payment arrived. Get a new quote to pay.",
    late: "Your payment arrived after the payment expired. If the price moved less than the gateway's tolerance it is credited at today's price (this page updates); otherwise it is held and refunded to the address you paid from.",
    invalid: "A payment in the wrong token or network arrived; it is refunded. Pay again with the instructions shown.",
  };
  let payment = null;
  let timer = null;

  function units(base, token) {
    const d = DECIMALS[token] ?? 0;
    const s = String(base).padStart(d + 1, "0");
    const whole = s.slice(0, s.length - d), frac = s.slice(s.length - d).replace(/0+$/, "");
    return frac ? whole + "." + frac : whole;
  }

  function countdown() {
    if (!payment) return;
    const left = Math.max(0, Math.floor((Date.parse(payment.expires_at) - Date.now()) / 1000));
    $("countdown").textContent = CLOSED.has(payment.state) ? "—" :
      left > 0 ? Math.floor(left / 60) + " min " + String(left % 60).padStart(2, "0") + " s" : "expired";
  }

  function render(p) {
    const first = payment === null;
    payment = p;
    $("credits").textContent = p.credits;
    $("state").textContent = p.state;
    $("state").dataset.state = p.state;
    let msg = MESSAGES[p.state] || "";
    const late = p.late_deposits || [];
    if (p.state === "late" && late.length) {  // the gateway has decided the late deposit
      const credit = late.find((d) => d.decision === "credit");
      msg = credit
        ? "Your payment arrived after the payment expired; the price moved little, so it is being credited at today's price (" + credit.credits + " credits)."
        : "Your payment arrived after the payment expired (" + late[0].reason + "); it is held and refunded to the address you paid from.";
    }
    if (BigInt(p.refundable_amount || "0") > 0n && !["late", "invalid", "overpaid"].includes(p.state)) {
      msg += " " + units(p.refundable_amount, p.token) + " " + p.token + " is held for refund.";
    }
    $("message").textContent = msg;
    $("amount").textContent = units(p.amount, p.token);
    $("amount-base").textContent = p.amount;
    $("token").textContent = p.token;
    $("paid").textContent = units(p.paid_amount, p.token) + " " + p.token;
    $("chain").textContent = p.chain + (p.instructions.chain_id ? " (chain id " + p.instructions.chain_id + ")" : "");
    const ins = p.instructions;
    $("target-label").textContent = ins.contract ? "Contract" : "Address";
    $("target").textContent = ins.contract || ins.to || "";
    $("reference").textContent = p.reference;
    $("how").textContent = ins.method ? "Call " + ins.method + " with the reference and the exact amount, or scan the code."
      : ins.remark ? "Send the amount with the remark " + ins.remark + "." : "Scan the code with your wallet.";
    if (first) { $("qr").src = "/pay/" + id + "/qr.svg"; $("token-select").value = p.token; }
    if (p.settlement) {
      $("settlement").textContent = "Credited " + p.settlement.credits + " credits in transaction " + p.settlement.tx_hash;
    }
    $("pay").classList.toggle("hidden", CLOSED.has(p.state) && p.state !== "credited");
    countdown();
  }

  async function poll() {
    try {
      const r = await fetch("/v1/payments/" + id, { headers: { Accept: "application/json" } });
      if (r.ok) render(await r.json());
      else if (r.status === 404) { $("message").textContent = "No such payment."; return; }
    } catch (e) { /* network hiccup: the next poll retries */ }
    if (!payment || !FINAL.has(payment.state)) timer = setTimeout(poll, 1500);
  }

  async function switchToken() {
    const token = $("token-select").value;
    if (!payment || token === payment.token) return;
    const q = await fetch("/v1/quotes", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: token, credits: payment.credits }) });
    if (!q.ok) { $("message").textContent = "No quote for " + token + " right now."; return; }
    const quote = await q.json();
    const r = await fetch("/v1/payments", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ quote_id: quote.id, beneficiary: payment.beneficiary }) });
    if (r.ok) location.assign("/pay/" + (await r.json()).id);
  }

  const tokens = (document.body.dataset.tokens || "").split(",").filter(Boolean);
  for (const t of tokens) {
    const o = document.createElement("option");
    o.value = t; o.textContent = t;
    $("token-select").appendChild(o);
  }
  if (tokens.length < 2) $("other-token").classList.add("hidden");
  $("switch").addEventListener("click", switchToken);
  setInterval(countdown, 1000);
  poll();
})();
