// SqliteSink (type = "sqlite"): the embedded default destination. Appends
// records to a table in a separate SQLite database (the "inbox") whose PRIMARY
// KEY is the record's idempotency key, with INSERT OR IGNORE, one transaction
// per batch (synchronous = FULL by default): exactly-once, see docs/sinks/sqlite.md.
// Thread-safety: deliver() may be called from several workers; the database
// is used on the sink's own strand.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <memory>

#include "config/settings.hpp"
#include "sinks/sink.hpp"

namespace tailbox::sinks {

class SqliteSink : public Sink {
 public:
  // Settings: path (default "tailbox-inbox.db"), table ("inbox"),
  // synchronous ("full" | "normal").
  SqliteSink(config::Settings& settings, boost::asio::any_io_executor executor);
  ~SqliteSink() override;

  const std::string& name() const override;
  std::string guarantee() const override;
  std::optional<std::string> open(const OpenContext& context) override;
  boost::asio::awaitable<Delivery> deliver(std::span<const Record> batch) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tailbox::sinks
