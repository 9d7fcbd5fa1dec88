#!/usr/bin/env node
// Compile Payers.sol (test-only) with the project's npm solc, as contracts/ethereum/build.js
// does; prints {"Name": {"abi", "bytecode"}} as JSON on stdout.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require(path.join(__dirname, '..', '..', '..', '..', 'node_modules', 'solc'));

const input = {
  language: 'Solidity',
  sources: { 'Payers.sol': { content: fs.readFileSync(path.join(__dirname, 'Payers.sol'), 'utf8') } },
  settings: {
    evmVersion: 'cancun',
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((m) => m.severity === 'error');
if (errors.length) {
  for (const m of errors) console.error(m.formattedMessage || m.message);
  process.exit(1);
}
const out = {};
for (const [name, c] of Object.entries(output.contracts['Payers.sol'])) {
  out[name] = { abi: c.abi, bytecode: '0x' + c.evm.bytecode.object };
}
process.stdout.write(JSON.stringify(out));
