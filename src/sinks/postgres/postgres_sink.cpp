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

namespace tailbox::sinks {

namespace asio = boost::asio;
using std::chrono::milliseconds;

namespace {

constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);

// A failed libpq step, as a value. Default-constructed: success.
struct PgError {
  bool failed = false;
  bool timeout = false;
  std::string sqlstate;  // "" when PostgreSQL did not send one (connection, timeout)
  std::string message;

  explicit operator bool() const { return failed; }
  static PgError of(std::string message, std::string sqlstate = {}) {
    return {true, false, std::move(sqlstate), std::move(message)};
  }
  std::string describe() const {
    return sqlstate.empty() ? message : message + " (SQLSTATE " + sqlstate + ")";
  }
};

// libpq's messages span lines ("...failed: Connection refused\n\tIs the server
// running..."); the outbox's last_error and the log want one line.
std::string one_line(std::string_view text) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

PgError error_of(const PGresult* r, PGconn* conn) {
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char* primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  std::string message = primary ? primary : PQresultErrorMessage(r);
  if (message.empty()) message = PQerrorMessage(conn);
  return PgError::of(one_line(message), state ? state : "");
}

void notice_to_log(void*, const char* message) {
  spdlog::debug("postgres: {}", one_line(message));
}

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

// One libpq connection in non-blocking mode, its socket watched by Asio, and
// the deadline of the operation in progress. All calls on one strand; the
// coroutines below never run two at a time on one Connection.
//
// Asio waits on a dup() of libpq's socket, not on libpq's own descriptor:
// libpq closes its descriptor by itself (a lost connection, or the next
// address while connecting), and another thread may get that number before
// we could deregister it; release() would then remove that thread's epoll
// registration. The dup stays ours until close(), so each side closes only
// its own descriptor.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using Wait = asio::posix::descriptor_base::wait_type;

  explicit Connection(asio::any_io_executor executor) : socket_(executor), timer_(executor) {}
  ~Connection() { close(); }

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  bool is_open() const { return conn_ != nullptr; }
  PGconn* get() const { return conn_; }
  std::vector<std::string> arrays;  // the batch's parameters (kept to reuse their capacity)

  void close() noexcept {
    disarm();
    unwatch();
    if (conn_) PQfinish(conn_);  // closes libpq's own descriptor
    conn_ = nullptr;
  }

  // Starts the deadline of one operation: past it every wait fails with a
  // timeout (and the caller must close()).
  void arm(milliseconds timeout) {
    expired_ = false;
    timeout_ = timeout;
    timer_.expires_after(timeout);
    timer_.async_wait([weak = weak_from_this(), gen = ++generation_](boost::system::error_code ec) {
      auto self = weak.lock();
      if (ec || !self || gen != self->generation_) return;
      self->expired_ = true;
      boost::system::error_code ignored;
      self->socket_.cancel(ignored);
    });
  }
  void disarm() noexcept {
    ++generation_;
    try {
      timer_.cancel();
    } catch (...) {
    }
  }

  // True unless the server closed the idle connection (restart, idle timeout).
  bool alive() {
    return conn_ && PQconsumeInput(conn_) && PQstatus(conn_) == CONNECTION_OK;
  }

  // Connects under a deadline of its own: PQconnectStartParams, then
  // PQconnectPoll whenever the socket is ready for what libpq asked.
  asio::awaitable<PgError> connect(const std::vector<const char*>& keywords,
                                   const std::vector<const char*>& values, milliseconds timeout) {
    close();
    arm(timeout);
    conn_ = PQconnectStartParams(keywords.data(), values.data(), 1);
    if (!conn_) co_return PgError::of("libpq: out of memory");
    PQsetNoticeProcessor(conn_, notice_to_log, nullptr);
    PostgresPollingStatusType poll =
        PQstatus(conn_) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING;
    while (poll != PGRES_POLLING_OK) {
      if (poll == PGRES_POLLING_FAILED) {
        PgError e = PgError::of(one_line(PQerrorMessage(conn_)));
        close();
        co_return e;
      }
      // libpq may move to another socket between polls (the next host or address).
      if (PgError e = watch(); e) {
        close();
        co_return e;
      }
      PgError e = co_await wait(poll == PGRES_POLLING_READING ? Wait::wait_read : Wait::wait_write);
      if (e) {
        close();
        co_return e;
      }
      poll = PQconnectPoll(conn_);
    }
    disarm();
    if (PQsetnonblocking(conn_, 1) != 0) {
      PgError e = PgError::of(one_line(PQerrorMessage(conn_)));
      close();
      co_return e;
    }
    co_return PgError{};
  }

  // Runs a simple-protocol query (one or more statements) and reads all its
  // results. Returns the first error.
  asio::awaitable<PgError> query(const std::string& sql) {
    if (!PQsendQuery(conn_, sql.c_str())) co_return connection_error();
    co_return co_await finish();
  }

  // Runs one statement (extended protocol, unnamed) with binary parameters.
  asio::awaitable<PgError> query_params(const std::string& sql, const std::vector<Oid>& types,
                                        const std::vector<std::string>& params) {
    std::vector<const char*> values;
    std::vector<int> lengths, formats;
    for (const auto& p : params) {
      values.push_back(p.data());
      lengths.push_back(static_cast<int>(p.size()));
      formats.push_back(1);
    }
    if (!PQsendQueryParams(conn_, sql.c_str(), static_cast<int>(params.size()), types.data(),
                           values.data(), lengths.data(), formats.data(), 0))
      co_return connection_error();
    co_return co_await finish();
  }

 private:
  // Watches the socket libpq uses now (a dup of it; see the class comment).
  PgError watch() {
    int fd = PQsocket(conn_);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0) return PgError::of("libpq has no socket");
    if (socket_.is_open() && st.st_ino == watched_ino_ && st.st_dev == watched_dev_) return {};
    unwatch();
    int mine = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (mine < 0) return PgError::of(std::string("dup: ") + std::strerror(errno));
    boost::system::error_code ec;
    socket_.assign(mine, ec);
    if (ec) {
      ::close(mine);
      return PgError::of("socket: " + ec.message());
    }
    watched_ino_ = st.st_ino;
    watched_dev_ = st.st_dev;
    return {};
  }
  void unwatch() noexcept {
    boost::system::error_code ignored;
    if (socket_.is_open()) socket_.close(ignored);
  }

  PgError connection_error() const { return PgError::of(one_line(PQerrorMessage(conn_))); }
  PgError timeout_error() const {
    PgError e = PgError::of("no answer within " + std::to_string(timeout_.count()) + " ms");
    e.timeout = true;
    return e;
  }

  asio::awaitable<PgError> wait(Wait what) {
    if (expired_) co_return timeout_error();
    auto [ec] = co_await socket_.async_wait(what, kAwait);
    if (expired_) co_return timeout_error();
    if (ec) co_return PgError::of("socket: " + ec.message());
    co_return PgError{};
  }

  // Sends what libpq has queued. While the socket is full the server may be
  // sending too, so read whatever arrived (libpq's advice for PQflush).
  asio::awaitable<PgError> flush() {
    for (;;) {
      int r = PQflush(conn_);
      if (r == 0) co_return PgError{};
      if (r < 0) co_return connection_error();
      if (PgError e = co_await wait(Wait::wait_write)) co_return e;
      if (!PQconsumeInput(conn_)) co_return connection_error();
    }
  }

  asio::awaitable<PgError> finish() {
    if (PgError e = co_await flush()) co_return e;
    PgError first;
    for (;;) {
      while (PQisBusy(conn_)) {
        if (PgError e = co_await wait(Wait::wait_read)) co_return e;
        if (!PQconsumeInput(conn_)) co_return connection_error();
      }
      Result r(PQgetResult(conn_));
      if (!r) break;
      ExecStatusType st = PQresultStatus(r.get());
      if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !first) first = error_of(r.get(), conn_);
    }
    co_return first;
  }

  PGconn* conn_ = nullptr;
  asio::posix::stream_descriptor socket_;  // our dup of libpq's socket
  ino_t watched_ino_ = 0;
  dev_t watched_dev_ = 0;
  asio::steady_timer timer_;
  uint64_t generation_ = 0;
  bool expired_ = false;
  milliseconds timeout_{0};
};

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

constexpr Oid kTextOid = 25, kInt8Oid = 20, kTextArrayOid = 1009, kInt8ArrayOid = 1016;

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

// The sink's name: where it writes, without user or password.
std::string target_name(const std::string& conninfo, const std::string& table) {
  std::string host, port, dbname;
  char* err = nullptr;
  if (PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err)) {
    for (PQconninfoOption* o = opts; o->keyword; ++o) {
      if (!o->val) continue;
      std::string_view k = o->keyword;
      if (k == "host" || (k == "hostaddr" && host.empty())) host = o->val;
      else if (k == "port") port = o->val;
      else if (k == "dbname") dbname = o->val;
    }
    PQconninfoFree(opts);
  }
  if (err) PQfreemem(err);
  return "postgres:" + (host.empty() ? std::string("(default host)") : host) +
         (port.empty() ? "" : ":" + port) + "/" +
         (dbname.empty() ? std::string("(default db)") : dbname) + "/" + table;
}

// A connection string that carries a password must not be echoed, not even
// in libpq's parse error (which can quote the offending token).
bool may_hold_password(std::string_view conninfo) {
  std::string lower(conninfo);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower.find("password") != std::string::npos) return true;
  size_t at = lower.find('@');
  size_t scheme = lower.find("://");
  return scheme != std::string::npos && at != std::string::npos &&
         lower.find(':', scheme + 3) < at;
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

bool valid_table_name(std::string_view name) {
  auto identifier = [](std::string_view part) {
    if (part.empty() || part.size() > 63) return false;
    auto c0 = static_cast<unsigned char>(part[0]);
    if (!(std::isalpha(c0) || c0 == '_')) return false;
    return std::all_of(part.begin(), part.end(), [](char c) {
      auto u = static_cast<unsigned char>(c);
      return u < 0x80 && (std::isalnum(u) || u == '_');
    });
  };
  size_t dot = name.find('.');
  if (dot == std::string_view::npos) return identifier(name);
  return identifier(name.substr(0, dot)) && identifier(name.substr(dot + 1));
}

}  // namespace postgres

struct PostgresSink::Impl {
  // Settings.
  std::string conninfo, password_file, password_env, table, name;
  bool create_table = false;
  milliseconds timeout{30'000};
  int connections = 1;

  // Built once from the settings.
  std::string setup_sql;   // per connection: create the table if asked, check the INSERT
  std::string insert_sql;  // one batch: INSERT ... SELECT FROM unnest($1..$9) ON CONFLICT DO NOTHING
  std::vector<Oid> insert_types;
  std::string password;    // read by open(); never logged
  std::vector<const char*> keywords, values;

  // Runtime, on the strand.
  asio::strand<asio::any_io_executor> strand;
  std::vector<std::shared_ptr<Connection>> idle;  // connections not in use (open or not yet)
  asio::steady_timer turn;                        // cancelled when one is given back
  bool lost = false;                              // a connection failed since the last connect

  explicit Impl(asio::any_io_executor ex) : strand(asio::make_strand(ex)), turn(strand) {
    turn.expires_at(asio::steady_timer::time_point::max());
  }

  void build_sql() {
    // The batch arrives as one array per column (binary parameters) and is
    // unnested into rows: one statement, so one transaction and one round trip.
    // Unnamed, so it keeps no state in the session (a pooler in transaction
    // mode can hand the next batch to another server connection).
    insert_sql = "INSERT INTO " + table +
                 " (key, host, source, path, file_offset, ingest_time, event_time, message, fields)\n"
                 "SELECT key, host, source, path, file_offset,\n"
                 "       timestamptz 'epoch' + ingest_ms * interval '1 millisecond',\n"
                 "       timestamptz 'epoch' + event_us * interval '1 microsecond',\n"
                 "       message, fields::jsonb\n"
                 "FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9)\n"
                 "     AS u(key, host, source, path, file_offset, ingest_ms, event_us, message, fields)\n"
                 "ON CONFLICT (key) DO NOTHING";
    insert_types = {kTextArrayOid, kTextArrayOid, kTextArrayOid, kTextArrayOid, kInt8ArrayOid,
                    kInt8ArrayOid, kInt8ArrayOid, kTextArrayOid, kTextArrayOid};
    std::string s;
    if (create_table)
      s += "CREATE TABLE IF NOT EXISTS " + table +
           " (\n"
           "  key         text PRIMARY KEY,  -- idempotency key: host_id/file uid/offset\n"
           "  host        text NOT NULL,\n"
           "  source      text NOT NULL,\n"
           "  path        text NOT NULL,\n"
           "  file_offset bigint NOT NULL,\n"
           "  ingest_time timestamptz NOT NULL,\n"
           "  event_time  timestamptz,       -- the parsed field time/timestamp (RFC 3339)\n"
           "  message     text NOT NULL,\n"
           "  fields      jsonb\n"
           ");\n";
    // Planning the INSERT (without running it) checks the table: its columns,
    // their types, and the unique key that ON CONFLICT (key) needs.
    s += "PREPARE tailbox_check (text[], text[], text[], text[], int8[], int8[], int8[], text[], "
         "text[]) AS " + insert_sql +
         ";\nEXPLAIN (COSTS OFF) EXECUTE tailbox_check (NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
         "NULL, NULL);\nDEALLOCATE tailbox_check";
    setup_sql = std::move(s);
  }

  void build_params() {
    // conninfo may override the encoding and the application name, not the
    // password read from password_file/password_env (later keywords win).
    keywords = {"client_encoding", "fallback_application_name", "dbname"};
    values = {"UTF8", "tailbox", conninfo.c_str()};
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
    c.disarm();
    if (e) {
      c.close();
      co_return e;
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
  asio::awaitable<PgError> write(Connection& c, std::span<const Record> batch) {
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

  // After a failed batch: leave the connection usable (no transaction open) or closed.
  asio::awaitable<void> recover(Connection& c, const PgError& e) {
    if (!c.is_open()) co_return;
    // A table dropped under a running relay is made again by the next
    // connection's set-up, with create_table.
    bool recreate = create_table && e.sqlstate == "42P01";
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
    if (PgError r = co_await c.query("ROLLBACK")) {
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
        if (PgError e = co_await connect(c, timeout)) {
          lost = true;
          co_return Delivery::retry("cannot connect: " + e.describe());
        }
      }
      c.arm(timeout);
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
  m.conninfo = s.required_string("conninfo");
  char* err = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(m.conninfo.c_str(), &err);
  if (!parsed) {
    std::string why = err ? one_line(err) : "out of memory";
    if (err) PQfreemem(err);
    if (may_hold_password(m.conninfo)) why = "details withheld: it may contain a password";
    s.fail("conninfo", "not a valid libpq connection string (" + why + ")");
  }
  PQconninfoFree(parsed);
  auto file = s.optional_string("password_file");
  auto env = s.optional_string("password_env");
  if (file && env) s.fail("password_env", "set password_file or password_env, not both");
  if (file && file->empty()) s.fail("password_file", "must not be empty");
  if (env && env->empty()) s.fail("password_env", "must not be empty");
  m.password_file = file.value_or("");
  m.password_env = env.value_or("");
  m.table = s.string("table", "tailbox_logs");
  if (!postgres::valid_table_name(m.table))
    s.fail("table", "must be a plain SQL name or schema.name (letters, digits, _; not starting "
                    "with a digit; at most 63 each), got \"" + m.table + "\"");
  m.create_table = s.boolean("create_table", false);
  m.timeout = s.duration("timeout", milliseconds(30'000));
  if (m.timeout.count() <= 0) s.fail("timeout", "must be more than 0");
  m.connections = static_cast<int>(s.integer("connections", 1, 1, 16));
  m.name = target_name(m.conninfo, m.table);
  m.build_sql();
  // Opened lazily by the first delivery that needs one.
  for (int i = 0; i < m.connections; ++i) m.idle.push_back(std::make_shared<Connection>(m.strand));
}

PostgresSink::~PostgresSink() = default;

const std::string& PostgresSink::name() const { return impl_->name; }

std::string PostgresSink::guarantee() const {
  return "exactly-once: the table's unique key is the idempotency key; each batch is one "
         "INSERT ... ON CONFLICT (key) DO NOTHING";
}

std::optional<std::string> PostgresSink::open(const std::optional<std::string>&) {
  Impl& m = *impl_;
  if (!m.password_file.empty() || !m.password_env.empty())
    m.password = read_secret("password", m.password_file, m.password_env);
  m.build_params();

  // Connect once now, on a private io_context: open() is synchronous.
  milliseconds limit = std::min(m.timeout, milliseconds(10'000));
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
  spdlog::info("{}: connected; table {} ready", m.name, m.table);
  return std::nullopt;
}

asio::awaitable<Delivery> PostgresSink::deliver(std::span<const Record> batch) {
  Impl* impl = impl_.get();
  co_return co_await asio::co_spawn(impl->strand, impl->deliver(batch), asio::use_awaitable);
}

}  // namespace tailbox::sinks
