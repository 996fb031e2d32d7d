#include "sinks/postgres/postgres_sink.hpp"

#include <libpq-fe.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/secret.hpp"
#include "sinks/postgres/connection.hpp"
#include "sinks/postgres/options.hpp"
#include "sinks/postgres/statements.hpp"

namespace tailbox::sinks {

namespace asio = boost::asio;
using std::chrono::milliseconds;

using postgres::Connection;
using postgres::kAwait;
using postgres::kInt8Oid;
using postgres::kTextOid;
using postgres::PgError;

namespace {

void put_u32(std::string& b, uint32_t v) {
  char c[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
               static_cast<char>(v)};
  b.append(c, 4);
}

void put_i64(std::string& b, int64_t v) {
  auto u = static_cast<uint64_t>(v);
  put_u32(b, static_cast<uint32_t>(u >> 32));
  put_u32(b, static_cast<uint32_t>(u));
}

// PostgreSQL's binary array format, one dimension.
void begin_array(std::string& b, Oid element, size_t n) {
  b.clear();
  put_u32(b, 1);  // dimensions
  put_u32(b, 1);  // may hold NULLs
  put_u32(b, element);
  put_u32(b, static_cast<uint32_t>(n));
  put_u32(b, 1);  // lower bound
}
void array_text(std::string& b, std::string_view v) {
  put_u32(b, static_cast<uint32_t>(v.size()));
  b.append(v);
}
void array_null(std::string& b) { put_u32(b, 0xFFFFFFFFu); }
void array_int8(std::string& b, int64_t v) {
  put_u32(b, 8);
  put_i64(b, v);
}

// RFC 3339: YYYY-MM-DD(T|t| )HH:MM:SS[.fraction](Z|z|+HH:MM|-HH:MM).
std::optional<int64_t> parse_rfc3339(std::string_view s) {
  size_t pos = 0;
  auto digits = [&](size_t n, int& out) {
    if (pos + n > s.size()) return false;
    out = 0;
    for (size_t i = 0; i < n; ++i) {
      char c = s[pos + i];
      if (c < '0' || c > '9') return false;
      out = out * 10 + (c - '0');
    }
    pos += n;
    return true;
  };
  auto expect = [&](std::string_view any) {
    if (pos >= s.size() || any.find(s[pos]) == std::string_view::npos) return false;
    ++pos;
    return true;
  };
  int y, mo, d, h, mi, sec;
  if (!digits(4, y) || !expect("-") || !digits(2, mo) || !expect("-") || !digits(2, d) ||
      !expect("Tt ") || !digits(2, h) || !expect(":") || !digits(2, mi) || !expect(":") ||
      !digits(2, sec))
    return std::nullopt;
  int64_t micros = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t n = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (n < 6) micros = micros * 10 + (s[pos] - '0');
      ++n;
      ++pos;
    }
    if (n == 0 || n > 9) return std::nullopt;
    for (; n < 6; ++n) micros *= 10;
  }
  int offset_minutes = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int sign = s[pos] == '-' ? -1 : 1;
    ++pos;
    int oh, om;
    if (!digits(2, oh) || !expect(":") || !digits(2, om) || oh > 23 || om > 59) return std::nullopt;
    offset_minutes = sign * (oh * 60 + om);
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  using namespace std::chrono;
  year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  // Second 60 (a leap second) is accepted as PostgreSQL does: the next minute's 0.
  if (y < 1 || !ymd.ok() || h > 23 || mi > 59 || sec > 60) return std::nullopt;
  int64_t days = sys_days(ymd).time_since_epoch().count();
  int64_t seconds = days * 86400 + h * 3600 + mi * 60 + sec - offset_minutes * 60;
  return seconds * 1'000'000 + micros;
}

}  // namespace

namespace postgres {

Delivery::Outcome classify(std::string_view sqlstate) {
  // Class 22, data exception: this row's bytes or values are what the server
  // refuses (22021 invalid byte sequence, NUL bytes included; 22001 string too
  // long; 22P02 invalid text representation...). Retrying cannot help.
  if (sqlstate.size() == 5 && sqlstate.starts_with("22")) return Delivery::Outcome::reject;
  // Everything else is retried: 08 connection exceptions, 57P01..03 shutdown,
  // 57014 query canceled (statement_timeout), 40001/40P01 serialization and
  // deadlock, 53 insufficient resources, failures without a SQLSTATE (a broken
  // connection, a timeout), and what a person must fix without losing rows
  // (42 missing table or permission, 23 a constraint of a hand-made table).
  return Delivery::Outcome::retry;
}

bool connection_lost(std::string_view s) {
  return s.starts_with("08") || s == "57P01" || s == "57P02" || s == "57P03";
}

std::optional<int64_t> event_time_us(std::string_view fields) {
  // Cheap test first: most records have neither field.
  if (fields.empty() || fields.find("\"time") == std::string_view::npos) return std::nullopt;
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(fields, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& object = v.get_object();
  for (const char* key : {"time", "timestamp"}) {
    auto it = object.find(key);
    if (it == object.end() || !it->value().is_string()) continue;
    const auto& text = it->value().get_string();
    if (auto us = parse_rfc3339(std::string_view(text.data(), text.size()))) return us;
  }
  return std::nullopt;
}

void copy_binary(std::span<const Record> batch, std::string& out) {
  // Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
  constexpr int64_t kPgEpochUs = 946'684'800'000'000;
  out.clear();
  size_t bytes = 21;
  for (const Record& r : batch)
    bytes += 2 + 9 * 4 + 3 * 8 + r.key.size() + r.host.size() + r.source.size() + r.path.size() +
             r.line.size() + 1 + r.fields.size();
  out.reserve(bytes);
  out.append("PGCOPY\n\377\r\n\0", 11);  // signature
  put_u32(out, 0);                            // flags: no OIDs
  put_u32(out, 0);                            // no header extension
  auto text = [&](std::string_view v) {
    put_u32(out, static_cast<uint32_t>(v.size()));
    out.append(v);
  };
  auto int8 = [&](int64_t v) {
    put_u32(out, 8);
    put_i64(out, v);
  };
  for (const Record& r : batch) {
    out.push_back(0);
    out.push_back(9);  // columns
    text(r.key);
    text(r.host);
    text(r.source);
    text(r.path);
    int8(r.offset);
    int8(r.ingest_ms * 1000 - kPgEpochUs);
    if (auto us = event_time_us(r.fields)) int8(*us - kPgEpochUs);
    else put_u32(out, 0xFFFFFFFFu);
    text(r.line);
    if (r.fields.empty()) {
      put_u32(out, 0xFFFFFFFFu);
    } else {
      put_u32(out, static_cast<uint32_t>(r.fields.size() + 1));
      out.push_back(1);  // jsonb's binary format version
      out.append(r.fields);
    }
  }
  out.append("\377\377", 2);  // trailer: -1 columns
}

}  // namespace postgres

struct PostgresSink::Impl {
  postgres::Options o;
  std::string name;

  // Built once from the settings.
  std::string setup_sql;   // per connection: create the table if asked, check the INSERT
  std::string copy_check_sql;  // per connection: may batches go by COPY?
  std::string copy_sql;    // one batch, the usual way: COPY ... FROM STDIN (FORMAT binary)
  std::string insert_sql;  // one batch: INSERT ... SELECT FROM unnest($1..$9) ON CONFLICT DO NOTHING
  const std::vector<Oid> insert_types{std::begin(postgres::kInsertTypes),
                                      std::end(postgres::kInsertTypes)};
  std::string password;    // read by open(); never logged
  std::vector<const char*> keywords, values;

  // Runtime, on the strand.
  asio::strand<asio::any_io_executor> strand;
  std::vector<std::shared_ptr<Connection>> idle;  // connections not in use (open or not yet)
  asio::steady_timer turn;                        // cancelled when one is given back
  bool lost = false;                              // a connection failed since the last connect
  bool said_no_copy = false;                      // logged once that the table does not fit COPY

  explicit Impl(asio::any_io_executor ex) : strand(asio::make_strand(ex)), turn(strand) {
    turn.expires_at(asio::steady_timer::time_point::max());
  }

  void build_sql() {
    insert_sql = postgres::insert_sql(o.table);
    copy_sql = postgres::copy_sql(o.table);
    copy_check_sql = postgres::copy_check_sql(o.table);
    setup_sql = postgres::setup_sql(o.table, o.create_table);
  }

  void build_params() {
    // conninfo may override the encoding and the application name, not the
    // password read from password_file/password_env (later keywords win).
    keywords = {"client_encoding", "fallback_application_name", "dbname"};
    values = {"UTF8", "tailbox", o.conninfo.c_str()};
    if (!password.empty()) {
      keywords.push_back("password");
      values.push_back(password.c_str());
    }
    keywords.push_back(nullptr);
    values.push_back(nullptr);
  }

  // Connects and sets the session up, each step under `limit`.
  asio::awaitable<PgError> connect(Connection& c, milliseconds limit) {
    if (PgError e = co_await c.connect(keywords, values, limit)) co_return e;
    c.arm(limit);
    PgError e = co_await c.query(setup_sql);
    std::string fits;
    if (!e) e = co_await c.query(copy_check_sql, &fits);
    c.disarm();
    if (e) {
      c.close();
      co_return e;
    }
    c.copy = fits == "t";
    if (!c.copy && !said_no_copy) {
      spdlog::info("{}: the table's columns are not the documented ones (or it is a view, or has "
                   "row-level security): batches go by INSERT ... ON CONFLICT, not COPY (slower)",
                   name);
      said_no_copy = true;
    }
    int v = PQserverVersion(c.get());
    spdlog::log(lost ? spdlog::level::info : spdlog::level::debug, "{}: {} (PostgreSQL {}.{})", name,
                lost ? "reconnected" : "connected", v / 10000, v % 10000);
    lost = false;
    co_return PgError{};
  }

  // The batch as the INSERT's 9 parameters, in PostgreSQL's binary
  // array format: no quoting or escaping, and the bytes reach the server as
  // they are (the server, not tailbox, refuses NUL and invalid UTF-8, per row).
  asio::awaitable<PgError> insert(Connection& c, std::span<const Record> batch) {
    auto& a = c.arrays;
    a.resize(9);
    const Oid types[9] = {kTextOid, kTextOid, kTextOid, kTextOid, kInt8Oid,
                          kInt8Oid, kInt8Oid, kTextOid, kTextOid};
    for (size_t i = 0; i < 9; ++i) begin_array(a[i], types[i], batch.size());
    for (const Record& r : batch) {
      array_text(a[0], r.key);
      array_text(a[1], r.host);
      array_text(a[2], r.source);
      array_text(a[3], r.path);
      array_int8(a[4], r.offset);
      array_int8(a[5], r.ingest_ms);
      if (auto us = postgres::event_time_us(r.fields)) array_int8(a[6], *us);
      else array_null(a[6]);
      array_text(a[7], r.line);
      if (r.fields.empty()) array_null(a[8]);
      else array_text(a[8], r.fields);
    }
    co_return co_await c.query_params(insert_sql, insert_types, a);
  }

  // The batch by COPY (see postgres::copy_binary), else by insert(). A COPY
  // the server refused (a key already there: a redelivery; anything else)
  // rolled back as a whole, and the batch goes again by insert(), whose
  // outcome is the batch's. A refusal about the data's format or the table
  // (class 22, 42, 0A) that insert() then does not share says that COPY does
  // not fit this table (changed since the check): this connection stops
  // trying it. Passing refusals (a lock or statement timeout, a deadlock)
  // do not.
  asio::awaitable<PgError> write(Connection& c, std::span<const Record> batch) {
    if (!c.copy) co_return co_await insert(c, batch);
    postgres::copy_binary(batch, c.stream);
    PgError e = co_await c.copy_in(copy_sql, c.stream);
    if (!e) co_return e;
    if (e.timeout || postgres::connection_lost(e.sqlstate) || PQstatus(c.get()) != CONNECTION_OK ||
        PQtransactionStatus(c.get()) != PQTRANS_IDLE)
      co_return e;
    std::string_view kind = std::string_view(e.sqlstate).substr(0, 2);
    bool misfit = kind == "22" || kind == "42" || kind == "0A";
    spdlog::debug("{}: COPY refused ({}); inserting the batch with ON CONFLICT DO NOTHING", name,
                  e.describe());
    PgError again = co_await insert(c, batch);
    if (!again && misfit) {
      spdlog::info("{}: COPY refused ({}) where INSERT works: this connection inserts from now on",
                   name, e.describe());
      c.copy = false;
    }
    co_return again;
  }

  // After a failed batch: leave the connection usable (no transaction open) or closed.
  asio::awaitable<void> recover(Connection& c, const PgError& e) {
    if (!c.is_open()) co_return;
    // A table dropped under a running relay is made again by the next
    // connection's set-up, with create_table.
    bool recreate = o.create_table && e.sqlstate == "42P01";
    if (e.timeout || recreate || postgres::connection_lost(e.sqlstate) ||
        PQstatus(c.get()) != CONNECTION_OK) {
      c.close();
      co_return;
    }
    PGTransactionStatusType tx = PQtransactionStatus(c.get());
    if (tx == PQTRANS_IDLE) co_return;  // the usual case: the statement's own transaction ended
    if (tx != PQTRANS_INERROR && tx != PQTRANS_INTRANS) {  // mid-command: no way back
      c.close();
      co_return;
    }
    if (PgError r = co_await c.query(postgres::kRollback)) {
      spdlog::debug("{}: ROLLBACK failed ({}); dropping the connection", name, r.describe());
      c.close();
    }
  }

  asio::awaitable<Delivery> deliver_on(Connection& c, std::span<const Record> batch) {
    for (int attempt = 1;; ++attempt) {
      bool reused = c.is_open();
      if (reused && !c.alive()) {
        spdlog::info("{}: the server closed an idle connection; reconnecting", name);
        lost = true;
        c.close();
        reused = false;
      }
      if (!c.is_open()) {
        if (PgError e = co_await connect(c, o.timeout)) {
          lost = true;
          co_return Delivery::retry("cannot connect: " + e.describe());
        }
      }
      c.arm(o.timeout);
      PgError e = co_await write(c, batch);
      if (!e) {
        c.disarm();
        co_return Delivery::delivered();
      }
      co_await recover(c, e);
      c.disarm();
      if (!c.is_open()) lost = true;
      Delivery::Outcome outcome = postgres::classify(e.sqlstate);
      // A connection that sat idle can die unnoticed (a server restart): try
      // once more at once on a new one instead of backing off. Harmless if the
      // batch did arrive: redelivery is a no-op.
      if (reused && attempt == 1 && !e.timeout && !c.is_open() &&
          outcome == Delivery::Outcome::retry)
        continue;
      if (outcome == Delivery::Outcome::reject) co_return Delivery::reject(e.describe());
      co_return Delivery::retry(e.timeout ? e.message + "; connection dropped" : e.describe());
    }
  }

  // Runs on the strand. A strand alone does not keep two coroutines apart
  // across their co_awaits, so each delivery takes a connection from `idle`
  // (waiting for one to come back if none is free) and gives it back after.
  asio::awaitable<Delivery> deliver(std::span<const Record> batch) {
    while (idle.empty()) co_await turn.async_wait(kAwait);
    std::shared_ptr<Connection> c = std::move(idle.back());
    idle.pop_back();
    struct GiveBack {
      Impl* impl;
      std::shared_ptr<Connection>& c;
      ~GiveBack() {
        impl->idle.push_back(std::move(c));
        impl->turn.cancel();
      }
    } give_back{this, c};
    co_return co_await deliver_on(*c, batch);
  }
};

PostgresSink::PostgresSink(config::Settings& s, asio::any_io_executor executor)
    : impl_(std::make_unique<Impl>(executor)) {
  Impl& m = *impl_;
  m.o = postgres::parse_options(s);
  m.name = postgres::target_name(m.o.conninfo, m.o.table);
  m.build_sql();
  // Opened lazily by the first delivery that needs one.
  for (int i = 0; i < m.o.connections; ++i) m.idle.push_back(std::make_shared<Connection>(m.strand));
}

PostgresSink::~PostgresSink() = default;

const std::string& PostgresSink::name() const { return impl_->name; }

std::string PostgresSink::guarantee() const {
  return "exactly-once: the table's unique key is the idempotency key; each batch is one "
         "COPY (all rows or none), sent again as INSERT ... ON CONFLICT (key) DO NOTHING when "
         "a key is already there";
}

std::optional<std::string> PostgresSink::open(const OpenContext&) {
  Impl& m = *impl_;
  if (!m.o.password_file.empty() || !m.o.password_env.empty())
    m.password = read_secret("password", m.o.password_file, m.o.password_env);
  m.build_params();

  // Connect once now, on a private io_context: open() is synchronous.
  milliseconds limit = std::min(m.o.timeout, milliseconds(10'000));
  PgError error;
  bool connected = false;
  {
    asio::io_context io;
    auto c = std::make_shared<Connection>(io.get_executor());
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          error = co_await c->connect(m.keywords, m.values, limit);
          if (error) co_return;
          connected = true;
          c->arm(limit);
          error = co_await c->query(m.setup_sql);
          c->disarm();
        },
        asio::detached);
    io.run();
    c->close();
  }
  if (!connected) throw std::runtime_error("cannot connect: " + error.describe());
  // The server answered, and says the set-up is wrong (no such database,
  // schema or table, no permission, no unique key on `key`) or is busy.
  if (error) throw std::runtime_error("set-up failed: " + error.describe());
  spdlog::info("{}: connected; table {} ready", m.name, m.o.table);
  return std::nullopt;
}

asio::awaitable<Delivery> PostgresSink::deliver(std::span<const Record> batch) {
  Impl* impl = impl_.get();
  co_return co_await asio::co_spawn(impl->strand, impl->deliver(batch), asio::use_awaitable);
}

}  // namespace tailbox::sinks
