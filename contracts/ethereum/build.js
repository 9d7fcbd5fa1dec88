#!/usr/bin/env node
// Compile contracts/ethereum/*.sol offline with the npm `solc` package (solcjs, standard JSON)
// and write build/<Contract>.json = {abi, bytecode, deployedBytecode} for the deployables.
// Exits non-zero with the compiler's messages on any error.
'use strict';
const fs = require('fs');
const path = require('path');

const DIR = __dirname;
const OUT = path.join(DIR, 'build');
const CONTRACTS = ['CreditLedger', 'CreditLock', 'PriceFeed', 'TestToken', 'TestTetherToken', 'TestFeeToken'];
const EVM_VERSION = 'cancun'; // solc 0.8.37 defaults to osaka; anvil and our chains run cancun
// Measured with bench/gas.py: runs 200 / 10000 / 1000000 differ by < 0.1% in settle gas;
// 10000 favours the hot path over deployment size. The IR pipeline saves ~1k gas a
// settlement over the legacy one and is required (CreditLedger's assembly loop is stack-deep).
const OPTIMIZER_RUNS = 10000;
const VIA_IR = true;

let solc;
try {
  solc = require(path.join(DIR, '..', '..', 'node_modules', 'solc'));
} catch (e) {
  console.error('build.js: npm package "solc" is missing; run `make setup` first');
  process.exit(2);
}

const sources = {};
for (const f of fs.readdirSync(DIR).filter((f) => f.endsWith('.sol')).sort()) {
  sources[f] = { content: fs.readFileSync(path.join(DIR, f), 'utf8') };
}

const input = {
  language: 'Solidity',
  sources,
  settings: {
    evmVersion: EVM_VERSION,
    optimizer: { enabled: true, runs: OPTIMIZER_RUNS },
    viaIR: VIA_IR,
    metadata: { bytecodeHash: 'none' },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
  },
};

// Relative imports ("./Committee.sol") resolve to the source unit names given above.
function findImports(p) {
  const f = path.join(DIR, path.basename(p));
  if (fs.existsSync(f)) return { contents: fs.readFileSync(f, 'utf8') };
  return { error: 'File not found: ' + p };
}

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const messages = output.errors || [];
const errors = messages.filter((m) => m.severity === 'error');
for (const m of messages) console.error((m.formattedMessage || m.message).trimEnd());
if (errors.length) {
  console.error(`build.js: ${errors.length} compiler error(s) (solc ${solc.version()})`);
  process.exit(1);
}

fs.mkdirSync(OUT, { recursive: true });
for (const name of CONTRACTS) {
  // a contract lives in <Name>.sol, or (the test tokens) in another unit: the first that has it
  const units = output.contracts || {};
  const unit = units[name + '.sol'] || Object.values(units).find((u) => u[name]);
  const c = unit && unit[name];
  if (!c || !c.evm.bytecode.object) {
    console.error(`build.js: no bytecode for ${name}`);
    process.exit(1);
  }
  const artifact = {
    contractName: name,
    compiler: { version: solc.version(), evmVersion: EVM_VERSION, optimizerRuns: OPTIMIZER_RUNS, viaIR: input.settings.viaIR },
    abi: c.abi,
    bytecode: '0x' + c.evm.bytecode.object,
    deployedBytecode: '0x' + c.evm.deployedBytecode.object,
  };
  const file = path.join(OUT, name + '.json');
  const tmp = file + '.tmp';
  fs.writeFileSync(tmp, JSON.stringify(artifact, null, 1) + '\n');
  fs.renameSync(tmp, file); // atomic: readers never see half a file
  console.log(`build.js: ${path.relative(process.cwd(), file)} (${c.evm.deployedBytecode.object.length / 2} bytes runtime)`);
}
