-- SQLite read model for the settlement store. Applied with executescript(); idempotent.
--
-- The logical model is the one of cql/schema.cql. SQLite can afford secondary indexes and a
-- single-node transaction, so several Cassandra tables fold into one here:
--   * orders is order_history (its primary key, clustered by user), order_lookup (the unique
--     index orders_by_id) and active_orders (the partial index orders_active over
--     is_open = 1) at once. Leaving active is the same versioned upsert that sets the final
--     status: an order row only ever moves to a higher version, so a replayed old NEW (lower
--     version) can never reopen a filled order; no tombstone is needed.
--   * order_statistics is a GROUP BY over the user's closed orders: derived from idempotent
--     state, correct under any replay, no counters.
--   * order_updates is both the per-order trail (its primary key) and the audit stream (scan
--     in version order; there is no partition to bound in a single file).
-- Every table is keyed by identity and every mutable row carries version = the
-- EngineOutput.sequence of its last write; the adapter's upserts only move forward.
-- Enum columns hold the enum's value string; amounts are integers (ticks, lots, minor units).
--
-- Layout: orders and trades are WITHOUT ROWID tables clustered by (user_id, id), so a page of
-- a user's history is a contiguous slice of the table (a few pages read, no per-row lookups),
-- and the upsert's conflict target is the clustering key itself. Rows are ~150 bytes, within
-- SQLite's guidance for WITHOUT ROWID. Measured choices are in settlement/STORE_NOTES.md.

CREATE TABLE IF NOT EXISTS orders (
    order_id           INTEGER NOT NULL,
    client_order_id    TEXT,
    user_id            INTEGER NOT NULL,
    symbol             TEXT    NOT NULL,
    side               TEXT    NOT NULL,
    order_type         TEXT    NOT NULL,
    time_in_force      TEXT    NOT NULL,
    price              INTEGER,               -- ticks; NULL for MARKET
    quantity           INTEGER NOT NULL,
    filled_quantity    INTEGER NOT NULL,
    remaining_quantity INTEGER NOT NULL,
    cumulative_quote   INTEGER NOT NULL,
    avg_fill_price     INTEGER NOT NULL,
    status             TEXT    NOT NULL,
    reject_reason      TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    version            INTEGER NOT NULL,
    is_open            INTEGER NOT NULL,      -- 1 while NEW or PARTIALLY_FILLED
    PRIMARY KEY (user_id, order_id)
) WITHOUT ROWID;
-- get_order(order_id); also makes an order id unique across users.
CREATE UNIQUE INDEX IF NOT EXISTS orders_by_id ON orders (order_id);
-- order_history(user, symbol): one index range per page, however rare the symbol.
CREATE INDEX IF NOT EXISTS orders_history_symbol ON orders (user_id, symbol, order_id DESC);
-- active_orders(user[, symbol]): only open orders are in this index, so its size is the
-- number of open orders, not the number of orders ever placed.
CREATE INDEX IF NOT EXISTS orders_active ON orders (user_id, order_id DESC) WHERE is_open = 1;

CREATE TABLE IF NOT EXISTS order_updates (
    order_id           INTEGER NOT NULL,
    version            INTEGER NOT NULL,      -- EngineOutput.sequence of this update
    command_id         INTEGER NOT NULL,
    user_id            INTEGER NOT NULL,
    symbol             TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    filled_quantity    INTEGER NOT NULL,
    remaining_quantity INTEGER NOT NULL,
    cumulative_quote   INTEGER NOT NULL,
    avg_fill_price     INTEGER NOT NULL,
    last_fill_price    INTEGER NOT NULL,
    last_fill_quantity INTEGER NOT NULL,
    reject_reason      TEXT,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (order_id, version)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS trades (
    user_id         INTEGER NOT NULL,
    trade_id        INTEGER NOT NULL,
    is_maker        INTEGER NOT NULL,         -- 0/1; in the key: one row per side
    order_id        INTEGER NOT NULL,
    symbol          TEXT    NOT NULL,
    side            TEXT    NOT NULL,         -- this user's side
    price           INTEGER NOT NULL,
    quantity        INTEGER NOT NULL,
    quote_quantity  INTEGER NOT NULL,
    fee             INTEGER NOT NULL,
    fee_asset       TEXT    NOT NULL,
    executed_at     INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    PRIMARY KEY (user_id, trade_id, is_maker)
) WITHOUT ROWID;
-- No (user_id, symbol) index on trades: trades(user, symbol) walks the user's trades newest
-- first (contiguous rows: the table is clustered by user) and keeps the symbol's. The index
-- cost ~14% of write throughput in bench/settlement_store.py; add it back if users with many
-- trades filter by rarely traded symbols.

CREATE TABLE IF NOT EXISTS balances (
    user_id   INTEGER NOT NULL,
    asset     TEXT    NOT NULL,
    available INTEGER NOT NULL,
    locked    INTEGER NOT NULL,
    version   INTEGER NOT NULL,
    PRIMARY KEY (user_id, asset)
) WITHOUT ROWID;

-- Market data (issue 15; see settlement/market_data.py). book_levels: each level's absolute
-- post-state from DepthUpdated, versioned by sequence; an emptied level stays as a row with
-- quantity 0 (so a replayed older write cannot resurrect it) and reads skip it.
CREATE TABLE IF NOT EXISTS book_levels (
    symbol      TEXT    NOT NULL,
    side        TEXT    NOT NULL,
    price       INTEGER NOT NULL,
    quantity    INTEGER NOT NULL,
    order_count INTEGER NOT NULL,
    update_id   INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    PRIMARY KEY (symbol, side, price)
) WITHOUT ROWID;

-- market_trades: public trades (no user or order ids), immutable facts.
CREATE TABLE IF NOT EXISTS market_trades (
    symbol         TEXT    NOT NULL,
    trade_id       INTEGER NOT NULL,
    price          INTEGER NOT NULL,
    quantity       INTEGER NOT NULL,
    quote_quantity INTEGER NOT NULL,
    taker_side     TEXT    NOT NULL,
    executed_at    INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    PRIMARY KEY (symbol, trade_id)
) WITHOUT ROWID;
-- recent_trades(symbol) newest first and a kline part's trades are both ranges of the
-- primary key (trade ids follow the engine's order), so no other index is needed.

-- kline_parts: the piece of a 1m kline made of the minute's trades with one trade_id >> 8
-- (at most 256 trades); klines: recomputed for every bucket a batch touches, 1m from its
-- parts, 5m 15m 1h 1d from the next shorter interval. trade_count is the rows' version.
CREATE TABLE IF NOT EXISTS kline_parts (
    symbol         TEXT    NOT NULL,
    open_time      INTEGER NOT NULL,
    block          INTEGER NOT NULL,
    interval       TEXT    NOT NULL,
    close_time     INTEGER NOT NULL,
    open           INTEGER NOT NULL,
    high           INTEGER NOT NULL,
    low            INTEGER NOT NULL,
    close          INTEGER NOT NULL,
    volume         INTEGER NOT NULL,
    quote_volume   INTEGER NOT NULL,
    trade_count    INTEGER NOT NULL,
    first_trade_id INTEGER NOT NULL,
    last_trade_id  INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    PRIMARY KEY (symbol, open_time, block)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS klines (
    symbol         TEXT    NOT NULL,
    interval       TEXT    NOT NULL,
    open_time      INTEGER NOT NULL,
    close_time     INTEGER NOT NULL,
    open           INTEGER NOT NULL,
    high           INTEGER NOT NULL,
    low            INTEGER NOT NULL,
    close          INTEGER NOT NULL,
    volume         INTEGER NOT NULL,
    quote_volume   INTEGER NOT NULL,
    trade_count    INTEGER NOT NULL,
    first_trade_id INTEGER NOT NULL,
    last_trade_id  INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    PRIMARY KEY (symbol, interval, open_time)
) WITHOUT ROWID;

-- Users and their API keys (UserCreated, ApiKeyUpdated): small tables, versioned like balances.
-- A key row is the key's latest state; a revoked key stays, revoked (key ids are never reused).
CREATE TABLE IF NOT EXISTS users (
    user_id    INTEGER PRIMARY KEY,
    role       TEXT    NOT NULL,
    label      TEXT,
    created_at INTEGER NOT NULL,
    version    INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS api_keys (
    api_key    TEXT    NOT NULL PRIMARY KEY,
    user_id    INTEGER NOT NULL,
    role       TEXT    NOT NULL,
    public_key TEXT    NOT NULL,
    revoked    INTEGER NOT NULL,              -- 0/1
    version    INTEGER NOT NULL               -- EngineOutput.sequence of the last change
) WITHOUT ROWID;
-- api_keys_since(sequence): the keys changed after a point, for a gateway catching up.
CREATE INDEX IF NOT EXISTS api_keys_by_version ON api_keys (version);

-- One row: the highest sequence applied, written in the same transaction as the rows it
-- covers (the tracking record). max() is order-insensitive, so it is replay-safe too.
CREATE TABLE IF NOT EXISTS settlement_progress (
    name         TEXT PRIMARY KEY,
    max_sequence INTEGER NOT NULL
) WITHOUT ROWID;
