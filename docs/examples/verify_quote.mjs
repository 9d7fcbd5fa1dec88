#!/usr/bin/env node
// Verify a creditbridge quote as a dApp would, with node's built-in crypto only (Node >= 16).
//
//   node verify_quote.mjs QUOTE.json --public-key HEX      # the gateway key you pinned
//   curl -s $API/v1/quotes/$ID | node verify_quote.mjs - --public-key HEX
//
// Exit status 0 and "valid" when the gateway's Ed25519 key signed the quote; 1 and the reason
// otherwise. The format is in docs/quotes.md. In a browser, the same steps run on Web Crypto
// (crypto.subtle.digest("SHA-256") and, where supported, crypto.subtle.verify("Ed25519")).
import { createHash, createPublicKey, verify as edVerify } from "node:crypto";
import { readFileSync, realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";

const QUOTE_DOMAIN = "creditbridge/quote/v1\n";
const BATCH_DOMAIN = "creditbridge/quote-batch/v1\n";
const SIGNED_FIELDS = ["amount", "chain", "created_at", "credit_price_usd", "credits", "expires_at", "id",
  "key_id", "rate", "sources", "token"]; // sorted

class Invalid extends Error {}

// Python's json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=True): JSON.stringify
// escapes quotes, backslashes and control characters the same way; ensure_ascii also escapes
// every UTF-16 code unit from U+007F up as \uXXXX (lower-case hex).
function canonicalJson(fields) {
  const body = SIGNED_FIELDS.map((k) => JSON.stringify(k) + ":" + JSON.stringify(fields[k])).join(",");
  return ("{" + body + "}").replace(/[\u007f-\uffff]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

export function canonicalBytes(quote) {
  const fields = {};
  for (const k of SIGNED_FIELDS) {
    let v = quote[k];
    if (k === "sources" && Array.isArray(v) && v.every((s) => typeof s === "string")) v = v.join(",");
    if (typeof v !== "string") throw new Invalid(`field ${k} is missing or not a string`);
    fields[k] = v;
  }
  return Buffer.from(QUOTE_DOMAIN + canonicalJson(fields), "ascii");
}

const sha256 = (...parts) => createHash("sha256").update(Buffer.concat(parts)).digest();

function hash32(h, what) {
  if (typeof h !== "string" || !/^[0-9a-fA-F]{64}$/.test(h)) throw new Invalid(`${what} must be 64 hex digits`);
  return Buffer.from(h, "hex");
}

export function signedMessage(quote) {
  const data = canonicalBytes(quote);
  const proof = quote.proof;
  if (proof === undefined || proof === null) return data; // signed on its own (before batched signing)
  if (typeof proof !== "object" || !Array.isArray(proof.path) || proof.path.length > 64) {
    throw new Invalid("proof must be {root, path: [at most 64 hashes]}");
  }
  const root = hash32(proof.root, "proof.root");
  let h = sha256(Buffer.from([0]), data);
  for (const entry of proof.path) {
    const s = hash32(entry, "a proof.path entry");
    const [a, b] = Buffer.compare(h, s) <= 0 ? [h, s] : [s, h];
    h = sha256(Buffer.from([1]), a, b);
  }
  if (!h.equals(root)) throw new Invalid("the proof does not lead from this quote to the signed root");
  return Buffer.concat([Buffer.from(BATCH_DOMAIN, "ascii"), root]);
}

export function verifyQuote(quote, publicKeyHex) {
  if (typeof quote !== "object" || quote === null) throw new Invalid("a quote is a JSON object");
  if (!/^[0-9a-fA-F]{64}$/.test(publicKeyHex)) throw new Invalid("the public key must be 64 hex digits");
  const keyId = publicKeyHex.toLowerCase().slice(0, 16);
  if (quote.key_id !== keyId) throw new Invalid(`signed by key ${quote.key_id}, not by ${keyId}`);
  if (typeof quote.signature !== "string" || !/^[0-9a-fA-F]{128}$/.test(quote.signature)) {
    throw new Invalid("signature must be 128 hex digits");
  }
  const key = createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(publicKeyHex, "hex").toString("base64url") },
    format: "jwk",
  });
  if (!edVerify(null, signedMessage(quote), key, Buffer.from(quote.signature, "hex"))) {
    throw new Invalid("the signature is invalid");
  }
}

function main(argv) {
  const i = argv.indexOf("--public-key");
  const publicKey = i >= 0 ? argv[i + 1] : undefined;
  const file = argv.find((a, j) => j !== i && j !== i + 1);
  if (!file || !publicKey) {
    console.error("usage: node verify_quote.mjs QUOTE.json|- --public-key HEX");
    return 2;
  }
  try {
    verifyQuote(JSON.parse(readFileSync(file === "-" ? 0 : file, "utf8")), publicKey);
  } catch (e) {
    if (!(e instanceof Invalid || e instanceof SyntaxError || e.code === "ENOENT")) throw e;
    console.log(`invalid: ${e.message}`);
    return 1;
  }
  console.log("valid");
  return 0;
}

// run as a script (not when imported as a module)
if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  process.exit(main(process.argv.slice(2)));
}
