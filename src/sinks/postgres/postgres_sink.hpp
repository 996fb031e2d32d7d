// PostgresSink (type = "postgres"): delivers records into a PostgreSQL table
// whose PRIMARY KEY (or UNIQUE) column `key` holds the idempotency key. Each
// batch is one binary COPY (all rows or none); a COPY the server refuses (a key
// already there, after a lost confirmation) is sent again as one
// INSERT ... SELECT FROM unnest($1..$9) ON CONFLICT (key) DO NOTHING, one binary
// array parameter per column, as is every batch for a table whose column types
// COPY does not fit: exactly-once, see docs/sinks/postgres.md.
//
// libpq runs in non-blocking mode, driven by Asio: the connection's socket is
// watched through a posix::stream_descriptor and every step (connect, send,
// read) waits on it under its deadline (`timeout`); no thread blocks on a
// query. (libpq resolves host names synchronously: use hostaddr to avoid it.)
// A timed-out or broken connection is dropped and the batch retried.
// Failures are classified by SQLSTATE (see postgres::classify): data errors
// reject the batch (the dispatcher splits it and dead-letters the bad rows with
// PostgreSQL's message), everything else is retried.
//
// Thread-safety: open() (from any one thread) completes before the first
// deliver(); deliver() may be called by several workers at once. The sink's
// connections (`connections`, default 1) live on its own strand; a delivery
// takes a free one or waits for one, so a connection carries one batch at a time.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "config/settings.hpp"
#include "sinks/postgres/options.hpp"
#include "sinks/sink.hpp"

namespace tailbox::sinks {

class PostgresSink : public Sink {
 public:
  // Settings (all checked here, without I/O):
  //   conninfo       required; a libpq connection string or URI (sslmode etc. go here)
  //   password_file  read at open(); one trailing newline is ignored
  //   password_env   or: the environment variable that holds the password
  //   table          "tailbox_logs"; a plain name, optionally "schema.table"
  //   create_table   false; true: CREATE TABLE IF NOT EXISTS with the default columns
  //   timeout        "30s"; deadline of each connect and each batch
  //   connections    1 (1..16); batches in flight at once, each on its own connection
  // Throws config::ConfigError naming the key.
  PostgresSink(config::Settings& settings, boost::asio::any_io_executor executor);
  ~PostgresSink() override;

  const std::string& name() const override;
  std::string guarantee() const override;
  // Reads the password, then connects once and checks the set-up (creates
  // the table if asked, plans the INSERT, which checks the table's columns,
  // their types and its unique key). Throws std::runtime_error, with PostgreSQL's
  // message, when any of it fails; the relay then retries open() with backoff
  // while lines wait in the outbox. Blocks for at most min(timeout, 10 s).
  std::optional<std::string> open(const OpenContext& context) override;
  boost::asio::awaitable<Delivery> deliver(std::span<const Record> batch) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

namespace postgres {

// The pieces below are pure functions, exposed for the unit tests.

// Retry or reject for a SQLSTATE ("" when the failure has none: a broken
// connection, a timeout). Data exceptions (class 22: invalid byte sequence,
// string too long, ...) reject; everything else retries.
Delivery::Outcome classify(std::string_view sqlstate);

// True for SQLSTATEs after which the connection is unusable (class 08,
// 57P01..57P03 shutdown/cannot connect now).
bool connection_lost(std::string_view sqlstate);

// The event time of a record, in microseconds since the Unix epoch: the
// string field "time" (or else "timestamp") of the parsed fields, when it is an
// RFC 3339 timestamp ("2026-11-27T10:00:00.123Z", "...+01:00"; a space may
// replace the T). nullopt otherwise (no fields, no such field, another format).
std::optional<int64_t> event_time_us(std::string_view fields_json);

// The batch as a COPY ... (FORMAT binary) stream for the 9 columns key, host,
// source, path, file_offset (bigint), ingest_time, event_time (timestamptz:
// microseconds since 2000-01-01 UTC), message, fields (jsonb: version 1, then
// the JSON text), into `out` (cleared first). Text goes as its bytes: the
// server checks the encoding, as it does for the INSERT's arrays.
void copy_binary(std::span<const Record> batch, std::string& out);

}  // namespace postgres

}  // namespace tailbox::sinks
