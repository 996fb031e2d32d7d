// Connection: one libpq connection in non-blocking mode driven by Asio, and
// PgError, a failed libpq step as a value. Header-only on purpose: its one
// user is postgres_sink.cpp, and the Asio-heavy code stays in that one
// translation unit.
//
// Thread-safety: all calls on one strand; the coroutines never run two at a
// time on one Connection. Failures are values (PgError), never exceptions.
#pragma once

#include <libpq-fe.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sinks/postgres/options.hpp"

namespace tailbox::sinks::postgres {

namespace asio = boost::asio;
using std::chrono::milliseconds;

inline constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);

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

inline PgError error_of(const PGresult* r, PGconn* conn) {
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char* primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  std::string message = primary ? primary : PQresultErrorMessage(r);
  if (message.empty()) message = PQerrorMessage(conn);
  return PgError::of(one_line(message), state ? state : "");
}

inline void notice_to_log(void*, const char* message) {
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
  std::string stream;               // the batch as a binary COPY stream (likewise)
  bool copy = false;                // this session's batches go by COPY (the table's
                                    // columns checked at connect; see PostgresSink)

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
  // results. Returns the first error; `value`, when given, receives the first
  // row's first column of the first result that has one ("" if none).
  asio::awaitable<PgError> query(const std::string& sql, std::string* value = nullptr) {
    if (!PQsendQuery(conn_, sql.c_str())) co_return connection_error();
    co_return co_await finish(value);
  }

  // COPY ... FROM STDIN: sends the statement, then `data` (the whole copy
  // stream, already in the statement's format) once the server asks for it,
  // and reads the result. A COPY is one statement, so one transaction: every
  // row or none; its result arrives after the commit.
  asio::awaitable<PgError> copy_in(const std::string& sql, std::string_view data) {
    if (!PQsendQuery(conn_, sql.c_str())) co_return connection_error();
    if (PgError e = co_await flush()) co_return e;
    // The server answers CopyInResponse, or an error when the statement
    // failed before any data (no such table, no permission...).
    if (PgError e = co_await wait_result()) co_return e;
    Result r(PQgetResult(conn_));
    if (!r) co_return PgError::of("COPY: no answer from the server");
    if (PQresultStatus(r.get()) != PGRES_COPY_IN) {
      PgError first = PQresultStatus(r.get()) == PGRES_COMMAND_OK
                          ? PgError::of("COPY: the server did not ask for data")
                          : error_of(r.get(), conn_);
      r.reset();
      PgError rest = co_await finish();
      co_return first ? first : rest;
    }
    r.reset();
    // In pieces, each sent (flush() also reads what the server says
    // meanwhile) before the next is queued: libpq's buffer stays small.
    constexpr size_t kPiece = 256 * 1024;
    int put = 1;
    for (size_t at = 0; at < data.size() && put > 0; at += kPiece) {
      size_t n = std::min(kPiece, data.size() - at);
      while ((put = PQputCopyData(conn_, data.data() + at, static_cast<int>(n))) == 0)
        if (PgError e = co_await wait(Wait::wait_write)) co_return e;
      if (put > 0)
        if (PgError e = co_await flush()) co_return e;
    }
    if (put > 0)
      while ((put = PQputCopyEnd(conn_, nullptr)) == 0)
        if (PgError e = co_await wait(Wait::wait_write)) co_return e;
    if (put < 0) {
      // The server may have refused the stream already (an error mid-COPY
      // ends the copy state in libpq): its error is the one to report.
      if (PQstatus(conn_) != CONNECTION_OK) co_return connection_error();
      PgError local = connection_error();
      PgError e = co_await finish();
      co_return e ? e : local;
    }
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

  // Waits until PQgetResult would not block.
  asio::awaitable<PgError> wait_result() {
    while (PQisBusy(conn_)) {
      if (PgError e = co_await wait(Wait::wait_read)) co_return e;
      if (!PQconsumeInput(conn_)) co_return connection_error();
    }
    co_return PgError{};
  }

  asio::awaitable<PgError> finish(std::string* value = nullptr) {
    if (PgError e = co_await flush()) co_return e;
    PgError first;
    bool have_value = false;
    for (;;) {
      if (PgError e = co_await wait_result()) co_return e;
      Result r(PQgetResult(conn_));
      if (!r) break;
      ExecStatusType st = PQresultStatus(r.get());
      // Still in a copy state (libpq would return it again and again): the
      // caller drops the connection (its transaction status is "active").
      if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH)
        co_return first ? first : PgError::of("libpq: the connection is still in COPY state");
      if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !first) first = error_of(r.get(), conn_);
      if (value && !have_value && st == PGRES_TUPLES_OK && PQntuples(r.get()) > 0 &&
          PQnfields(r.get()) > 0) {
        *value = PQgetvalue(r.get(), 0, 0);
        have_value = true;
      }
    }
    if (value && !have_value) value->clear();
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

}  // namespace tailbox::sinks::postgres
