"""TON family: the FunC lock contract's bindings, a watcher over pytoniq's LiteBalancer (with a
toncenter v2 HTTP transport as fallback), payment instructions, and a local test chain on the
real TVM emulator that an unmodified LiteBalancer reaches over ADNL (tests and the devnet)."""
