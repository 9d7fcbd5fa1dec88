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
  const FAMILY = document.body.dataset.family || "";
  const LOCK_SELECTOR = "0x01670ba9";  // lock(bytes32): the call-based method of payments without a transfer
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
    renderTransfer(p);
    $("target-label").textContent = ins.contract ? "Contract" : "Address";
    $("target").textContent = ins.contract || ins.to || "";
    $("reference").textContent = p.reference;
    $("remark").textContent = ins.remark || "";
    $("remark-label").classList.toggle("hidden", !ins.remark);
    $("remark-line").classList.toggle("hidden", !ins.remark);
    $("how").textContent = ins.method ? "Call " + ins.method + " on the contract with the reference and the exact amount."
      : ins.remark ? "Send the amount to the address in a batch with the remark " + ins.remark + "."
      : ins.body ? "Send the amount to the contract with the message body of the payment (the wallet link carries it)."
      : "";
    if (first) { $("qr").src = "/pay/" + id + "/qr.svg"; $("token-select").value = p.token; }
    if (p.settlement) {
      $("settlement").textContent = "Credited " + p.settlement.credits + " credits in transaction " + p.settlement.tx_hash;
    }
    $("pay").classList.toggle("hidden", CLOSED.has(p.state) && p.state !== "credited");
    countdown();
  }

  // --- the plain transfer: what any wallet can send -------------------------------------------
  function transferOf(p) {
    const ins = p.instructions, t = ins.transfer;
    if (t && t.to) return { to: t.to, amount: String(t.amount), comment: t.comment || null, payload: t.payload || null };
    return null;
  }

  function renderTransfer(p) {
    const t = transferOf(p), ins = p.instructions;
    $("transfer").classList.toggle("hidden", !t);
    if (t) {
      $("t-amount").textContent = units(t.amount, p.token);
      $("t-token").textContent = p.token;
      $("t-to").textContent = t.to;
      $("t-comment").textContent = t.comment || "";
      $("t-comment-line").classList.toggle("hidden", !t.comment);
      $("t-note").textContent = FAMILY === "substrate"
        ? "A plain transfer (transfer_keep_alive) of exactly this amount to this address pays; no remark needed."
        : FAMILY === "ton" ? "Any TON wallet can send it; type the comment exactly." : "";
    }
    const uri = ins.uri || ins.link || "";
    $("open-link-line").classList.toggle("hidden", !/^(ethereum|ton):/.test(uri));
    if (uri) $("open-link").href = uri;
    $("wallet").classList.toggle("hidden", !(FAMILY === "evm" || (FAMILY === "ton" && window.TON_CONNECT_UI)));
  }

  function copy(ev) {
    const button = ev.currentTarget, src = $(button.dataset.copy);
    if (!navigator.clipboard) { button.textContent = "Select and copy"; return; }
    navigator.clipboard.writeText(src.textContent).then(() => { button.textContent = "Copied"; },
      () => { button.textContent = "Copy failed"; });
  }

  function walletStatus(text, kind) {
    $("wallet-status").textContent = text;
    $("wallet-status").dataset.kind = kind || "";
  }

  // --- EVM wallets: EIP-6963 discovery, EIP-1193 requests ----------------------------------------
  const providers = new Map();  // uuid -> {info, provider}
  window.addEventListener("eip6963:announceProvider", (ev) => {
    const d = ev.detail;
    if (d && d.info && d.provider && typeof d.provider.request === "function") providers.set(d.info.uuid || d.info.name, d);
  });
  window.dispatchEvent(new Event("eip6963:requestProvider"));

  function evmTx(p, from) {
    const t = transferOf(p), ins = p.instructions;
    if (t) return { from: from, to: t.to, value: "0x" + BigInt(t.amount).toString(16) };
    // a payment made before plain transfers: the lock contract's call
    return { from: from, to: ins.contract, value: "0x" + BigInt(ins.value).toString(16),
             data: LOCK_SELECTOR + ins.reference.slice(2) };
  }

  function walletError(e) {
    const code = e && e.code;
    if (code === 4001) return "You rejected the request in your wallet.";
    if (code === 4902) return "Your wallet does not know this network (chain id " + payment.instructions.chain_id + "): add it, then try again.";
    if (code === -32002) return "Your wallet is already asking you something: open it.";
    return "The wallet answered: " + ((e && e.message) || String(e));
  }

  async function payWithEvm(entry) {
    const provider = entry.provider, p = payment;
    try {
      walletStatus("Asking " + entry.info.name + " for an account...");
      const accounts = await provider.request({ method: "eth_requestAccounts" });
      if (!accounts || !accounts.length) throw new Error("no account");
      const want = Number(p.instructions.chain_id);
      const have = Number(BigInt(await provider.request({ method: "eth_chainId" })));
      if (have !== want) {
        walletStatus("Switching your wallet to chain id " + want + "...");
        await provider.request({ method: "wallet_switchEthereumChain", params: [{ chainId: "0x" + want.toString(16) }] });
        const now = Number(BigInt(await provider.request({ method: "eth_chainId" })));
        if (now !== want) throw { code: 4902, message: "wrong chain" };
      }
      walletStatus("Confirm the payment in your wallet...");
      const hash = await provider.request({ method: "eth_sendTransaction", params: [evmTx(p, accounts[0])] });
      walletStatus("Sent: transaction " + hash + ". This page updates when it is seen.", "ok");
      $("wallet-status").dataset.tx = hash;
    } catch (e) {
      walletStatus(walletError(e), "error");
    }
  }

  function evmEntries() {
    const list = [...providers.values()];
    if (!list.length && window.ethereum && typeof window.ethereum.request === "function") {
      list.push({ info: { name: "your browser wallet", icon: "" }, provider: window.ethereum });
    }
    return list;
  }

  function payWithWallet() {
    if (!payment) return;
    if (FAMILY === "ton") return payWithTon();
    const list = evmEntries();
    if (!list.length) { walletStatus("No browser wallet found: use the address and amount above, or scan the code.", "error"); return; }
    if (list.length === 1) return payWithEvm(list[0]);
    const ul = $("providers");
    ul.textContent = "";
    for (const entry of list) {
      const li = document.createElement("li"), b = document.createElement("button");
      b.type = "button";
      if (entry.info.icon && /^data:image\//.test(entry.info.icon)) {
        const img = document.createElement("img");
        img.src = entry.info.icon; img.alt = "";
        b.appendChild(img);
      }
      b.appendChild(document.createTextNode("Pay with " + entry.info.name));
      b.addEventListener("click", () => payWithEvm(entry));
      li.appendChild(b); ul.appendChild(li);
    }
    ul.classList.remove("hidden");
    walletStatus("Choose your wallet.");
  }

  // --- TON: TON Connect (the pinned @tonconnect/ui bundle, served by this API) --------------------
  let tonUi = null;
  function tonConnect() {
    if (!tonUi && window.TON_CONNECT_UI) {
      tonUi = new window.TON_CONNECT_UI.TonConnectUI({
        manifestUrl: location.origin + "/tonconnect-manifest.json", buttonRootId: "ton-connect",
        analytics: { mode: "off" } });
    }
    return tonUi;
  }

  async function payWithTon() {
    const ui = tonConnect(), p = payment;
    if (!ui) return;
    const ins = p.instructions;
    // the plain transfer needs its comment as a payload cell (transfer.payload); without one, the
    // call-based message (the lock's body) pays instead: a transfer without its comment would be refunded
    const plain = transferOf(p), t = plain && (plain.payload || !plain.comment) ? plain : null;
    const message = t ? { address: t.to, amount: t.amount } : { address: ins.contract, amount: String(ins.amount) };
    const payload = t ? t.payload : ins.body;
    if (payload) message.payload = payload;
    try {
      if (!ui.connected) {
        walletStatus("Connect your TON wallet...");
        await ui.openModal();
        await new Promise((resolve) => { const stop = ui.onStatusChange((w) => { if (w) { stop(); resolve(); } }); });
      }
      walletStatus("Confirm the payment in your wallet...");
      await ui.sendTransaction({ validUntil: Math.floor(Date.now() / 1000) + 600, messages: [message] });
      walletStatus("Sent. This page updates when the payment is seen.", "ok");
    } catch (e) {
      walletStatus("The wallet did not send the payment: " + ((e && e.message) || String(e)), "error");
    }
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
  $("pay-wallet").addEventListener("click", payWithWallet);
  for (const b of document.querySelectorAll("button.copy")) b.addEventListener("click", copy);
  if (FAMILY === "ton") tonConnect();
  setInterval(countdown, 1000);
  poll();
})();
