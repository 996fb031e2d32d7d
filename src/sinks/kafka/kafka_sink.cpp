#include "core/record_key.hpp"
#include "sinks/kafka/kafka_sink.hpp"

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>
#include <zlib.h>

#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <list>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <unordered_map>
#include <vector>

#include "core/blocking.hpp"
#include "core/secret.hpp"
#include "sinks/kafka/clients.hpp"
#include "sinks/kafka/ledger.hpp"
#include "sinks/kafka/options.hpp"
#include "sinks/kafka/progress.hpp"
#include "sinks/ndjson.hpp"

namespace asio = boost::asio;
namespace json = boost::json;
using std::chrono::milliseconds;

namespace tailbox::sinks {

using kafka::Txn;

int32_t kafka_progress_partition(std::string_view key, int32_t partitions) {
  uLong crc = crc32(0L, reinterpret_cast<const Bytef*>(key.data()), static_cast<uInt>(key.size()));
  return static_cast<int32_t>(crc % static_cast<uLong>(partitions));
}

namespace {

// Delivery reports of one batch, counted by librdkafka's callback (which runs
// inside rd_kafka_flush/poll, on the sink's own thread). Owned by the sink
// until every report of it arrived: a batch given up early (a timeout) still
// gets its reports later.
struct BatchReport {
  int64_t outstanding = 0;
  int64_t failed = 0;
  bool too_large = false;      // a record was refused for its size
  rd_kafka_resp_err_t first_error = RD_KAFKA_RESP_ERR_NO_ERROR;
};

bool is_size_error(rd_kafka_resp_err_t e) {
  return e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE || e == RD_KAFKA_RESP_ERR_INVALID_RECORD;
}

void on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void*) {
  auto* report = static_cast<BatchReport*>(m->_private);
  if (!report) return;
  --report->outstanding;
  if (!m->err) return;
  if (report->failed++ == 0) report->first_error = m->err;
  if (is_size_error(m->err)) report->too_large = true;
}


}  // namespace

struct KafkaSink::Impl {
  kafka::Options o;
  std::string host_id, name;

  asio::thread_pool pool{1};   // the blocking librdkafka calls run here
  std::unique_ptr<kafka::Clients> clients;   // the producer, the progress readers
  std::string session;         // tells this run's transactions apart in headers

  // Transactions not yet known acked, and the keys to acknowledge without
  // sending; shared with committed() (another strand) under mu.
  std::mutex mu;
  kafka::Ledger ledger{""};  // host_id set by the constructor
  KeysInOutbox lookup;     // from open()
  std::list<std::unique_ptr<BatchReport>> reports;   // see BatchReport

  ~Impl() {
    pool.join();
    // Outstanding reports arrive here, into `reports` (still alive).
    if (clients) clients->destroy_producer(milliseconds(2000));
  }

  BatchReport& new_report() {
    reports.remove_if([](const std::unique_ptr<BatchReport>& r) { return r->outstanding <= 0; });
    return *reports.emplace_back(std::make_unique<BatchReport>());
  }

  // Keeps, of the listed transactions, the rows still in the outbox (pending
  // or dead): those are in Kafka and must not be sent again. Without a lookup
  // (unit use), keeps own transactions after the last committed ack.
  std::vector<Txn> still_in_outbox(std::vector<Txn> listed, uint64_t committed_seq) {
    if (!lookup) {
      std::erase_if(listed, [&](const Txn& t) { return t.seq <= committed_seq; });
      return listed;
    }
    std::vector<std::string> keys;
    for (auto& t : listed)
      for (auto& [uid, offs] : t.offsets)
        for (int64_t off : offs) keys.push_back(make_record_key(host_id, uid, off));
    std::vector<bool> present = keys.empty() ? std::vector<bool>() : lookup(keys);   // throws
    size_t k = 0;
    for (auto& t : listed)
      for (auto& [uid, offs] : t.offsets)
        for (auto o = offs.begin(); o != offs.end();) o = present[k++] ? std::next(o) : offs.erase(o);
    for (auto& t : listed) std::erase_if(t.offsets, [](const auto& f) { return f.second.empty(); });
    std::erase_if(listed, [](const Txn& t) { return t.offsets.empty(); });
    return listed;
  }

  // At open(): what was committed to Kafka but not yet removed from the
  // outbox. Throws when the record cannot be read or the outbox not asked
  // (open() then fails and is retried: guessing could send lines twice).
  void inherit(const std::string& record, uint64_t committed_seq) {
    std::vector<Txn> carried;
    uint64_t record_seq = 0;
    if (!record.empty()) {
      kafka::Progress pr;
      try {
        pr = kafka::decode_progress(record);
      } catch (const std::exception& e) {
        throw std::runtime_error("the progress record of " + o.transactional_id + " in " +
                                 o.progress_topic + " cannot be read (" + e.what() +
                                 "); not sending anything rather than risk sending lines twice");
      }
      record_seq = pr.seq;
      carried = still_in_outbox(std::move(pr.listed), committed_seq);
    }
    std::lock_guard lock(mu);
    size_t keys = ledger.inherit(std::move(carried), committed_seq, record_seq);
    if (keys)
      spdlog::info("{}: {} lines were committed to Kafka before the last stop but not yet "
                   "removed from the outbox; they are acknowledged without sending them again",
                   name, keys);
  }

  // After a commit with an unknown outcome (and a new producer, which made the
  // coordinator finish or abort it): did transaction `unknown_seq` commit? The
  // latest committed progress record is its own exactly when it did.
  void settle_unknown() {
    std::string record = clients->read_progress();   // throws: stays unknown, retried
    uint64_t unknown_seq = 0;
    {
      std::lock_guard lock(mu);
      unknown_seq = ledger.unknown();
    }
    std::string want = session + "." + std::to_string(unknown_seq);
    bool did_commit = false;
    if (!record.empty()) {
      try {
        kafka::Progress pr = kafka::decode_progress(record);
        did_commit = pr.txn == want;
        std::lock_guard lock(mu);
        ledger.saw_seq(pr.seq);
      } catch (const std::exception& e) {
        throw std::runtime_error(std::string("the progress record cannot be read: ") + e.what());
      }
    }
    std::lock_guard lock(mu);
    if (auto keys = ledger.settle(did_commit))
      spdlog::info("{}: the transaction whose commit timed out did commit; its {} lines are "
                   "acknowledged without sending them again", name, *keys);
  }

  // Splits the batch: rows already in Kafka (acknowledged without sending,
  // marked as skipped in delivery `seq`) and rows to send.
  std::vector<const Record*> take_skipped(std::span<const Record> batch, uint64_t seq, size_t& skipped) {
    std::lock_guard lock(mu);
    return ledger.take_skipped(batch, seq, skipped);
  }

  // The Kafka key of `r`; may point into `scratch`.
  std::string_view key_of(const Record& r, std::string& scratch) const {
    if (o.key_mode == "file") return r.key.substr(0, r.key.rfind('/'));
    if (o.key_mode == "field" && !r.fields.empty()) {
      boost::system::error_code ec;
      json::value v = json::parse(r.fields, ec);
      if (!ec && v.is_object()) {
        if (auto* f = v.as_object().if_contains(o.key_field)) {
          scratch = f->is_string() ? std::string(f->as_string()) : json::serialize(*f);
          return scratch;
        }
      }
    }
    return r.key;
  }

  // Queues one record; returns the error librdkafka gave at once, if any.
  rd_kafka_resp_err_t produce(const Record& r, BatchReport& report, const std::string& txn_id,
                              std::string& value) {
    value.clear();
    if (o.ndjson) {
      append_ndjson(value, r);
      if (!value.empty() && value.back() == '\n') value.pop_back();
    } else {
      value.assign(r.line);
    }
    std::string scratch;
    std::string_view key = key_of(r, scratch);
    std::string offset = std::to_string(r.offset);
    auto deadline = std::chrono::steady_clock::now() + o.timeout;
    for (;;) {
      ++report.outstanding;
      rd_kafka_resp_err_t e = rd_kafka_producev(
          clients->producer(), RD_KAFKA_V_TOPIC(o.topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
          RD_KAFKA_V_KEY(key.data(), key.size()), RD_KAFKA_V_VALUE(value.data(), value.size()),
          RD_KAFKA_V_HEADER("tailbox-key", r.key.data(), static_cast<ssize_t>(r.key.size())),
          RD_KAFKA_V_HEADER("tailbox-host", r.host.data(), static_cast<ssize_t>(r.host.size())),
          RD_KAFKA_V_HEADER("tailbox-source", r.source.data(), static_cast<ssize_t>(r.source.size())),
          RD_KAFKA_V_HEADER("tailbox-path", r.path.data(), static_cast<ssize_t>(r.path.size())),
          RD_KAFKA_V_HEADER("tailbox-offset", offset.data(), static_cast<ssize_t>(offset.size())),
          RD_KAFKA_V_HEADER("tailbox-txn", txn_id.data(), static_cast<ssize_t>(txn_id.size())),
          RD_KAFKA_V_OPAQUE(&report), RD_KAFKA_V_END);
      if (!e) return e;
      --report.outstanding;
      if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL || std::chrono::steady_clock::now() > deadline) return e;
      rd_kafka_poll(clients->producer(), 50);
    }
  }

  void forget(uint64_t seq) {
    std::lock_guard lock(mu);
    ledger.forget(seq);
  }

  Delivery abort(const std::string& why, bool reject = false) {
    if (rd_kafka_error_t* e = rd_kafka_abort_transaction(clients->producer(), static_cast<int>(o.timeout.count()))) {
      spdlog::warn("{}: cannot abort the transaction ({}); a new producer will be made", name,
                   rd_kafka_error_string(e));
      clients->request_reset();
      rd_kafka_error_destroy(e);
    }
    return reject ? Delivery::reject(why) : Delivery::retry(why);
  }

  static std::string error_text(rd_kafka_error_t* e) {
    std::string s = rd_kafka_error_string(e);
    return s;
  }

  // A new producer (after a fatal error or an unknown commit outcome), and
  // the answer to that outcome. Returns an error text, or "" when ready.
  std::string ready() {
    try {
      if (clients->needs_reset()) clients->start_producer();
      uint64_t unknown = 0;
      {
        std::lock_guard lock(mu);
        unknown = ledger.unknown();
      }
      if (unknown) settle_unknown();
    } catch (const std::exception& e) {
      clients->request_reset();
      return e.what();
    }
    return "";
  }

  Delivery deliver_transactional(std::span<const Record> batch) {
    if (std::string why = ready(); !why.empty()) return Delivery::retry(why);
    uint64_t seq = 0;
    {
      std::lock_guard lock(mu);
      seq = ledger.next_seq();
    }
    std::string state = std::to_string(seq);
    size_t skipped = 0;
    std::vector<const Record*> send = take_skipped(batch, seq, skipped);
    if (send.empty()) return Delivery::delivered(state);
    if (rd_kafka_error_t* e = rd_kafka_begin_transaction(clients->producer())) {
      std::string why = error_text(e);
      if (rd_kafka_error_is_fatal(e)) clients->request_reset();
      rd_kafka_error_destroy(e);
      return Delivery::retry("cannot begin a transaction: " + why);
    }
    try {
      return in_transaction(batch, send, seq, state);
    } catch (const std::exception& e) {
      // Whatever failed (memory), the transaction must not stay open.
      forget(seq);
      return abort(std::string("unexpected error in a transaction: ") + e.what());
    }
  }

  // The part of deliver_transactional() after begin_transaction: every path
  // commits or aborts (or leaves the outcome to settle_unknown()).
  Delivery in_transaction(std::span<const Record> batch, const std::vector<const Record*>& send,
                          uint64_t seq, const std::string& state) {
    std::string txn_id = session + "." + state;
    BatchReport& report = new_report();
    std::string value;
    for (const Record* r : send) {
      rd_kafka_resp_err_t e = produce(*r, report, txn_id, value);
      if (e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
        return abort("a record of " + std::to_string(value.size()) +
                     " bytes is larger than the producer's message.max.bytes", true);
      if (e) return abort(std::string("cannot queue a record: ") + rd_kafka_err2str(e));
    }
    // Every record is acknowledged by the brokers before the progress record
    // is queued, so a progress record never names a record that is not there.
    rd_kafka_flush(clients->producer(), static_cast<int>(o.timeout.count()));
    if (report.outstanding > 0) return abort("timed out waiting for the brokers' acknowledgements");
    if (report.failed > 0) {
      std::string why = std::to_string(report.failed) + " of " + std::to_string(send.size()) +
                        " records failed: " + rd_kafka_err2str(report.first_error);
      return abort(why, report.too_large);
    }
    std::string progress;
    {
      std::lock_guard lock(mu);
      progress = kafka::encode_progress(host_id, txn_id, seq, send, ledger.sending(seq, send));
    }
    ++report.outstanding;
    rd_kafka_resp_err_t pe = rd_kafka_producev(
        clients->producer(), RD_KAFKA_V_TOPIC(o.progress_topic.c_str()),
        RD_KAFKA_V_PARTITION(kafka_progress_partition(o.transactional_id, clients->progress_partitions())),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(o.transactional_id.data(), o.transactional_id.size()),
        RD_KAFKA_V_VALUE(progress.data(), progress.size()), RD_KAFKA_V_OPAQUE(&report), RD_KAFKA_V_END);
    if (pe) {
      --report.outstanding;
      forget(seq);
      // Too large: a smaller batch makes a smaller record (a single row is
      // retried, never dead-lettered for the progress record's size).
      bool split = pe == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE && batch.size() > 1;
      return abort("cannot queue the progress record (" + std::to_string(progress.size()) +
                   " bytes): " + rd_kafka_err2str(pe), split);
    }
    if (rd_kafka_error_t* e = rd_kafka_commit_transaction(clients->producer(), static_cast<int>(o.timeout.count()))) {
      std::string why = "cannot commit the transaction: " + error_text(e);
      bool needs_abort = rd_kafka_error_txn_requires_abort(e);
      rd_kafka_error_destroy(e);
      if (needs_abort) {
        forget(seq);
        // The brokers refused a record for its size (the progress record,
        // when the topic's max.message.bytes is lower): a smaller batch.
        return abort(why, report.too_large && batch.size() > 1);
      }
      // Timed out or fatal: the outcome is unknown. A new producer makes the
      // coordinator finish or abort it; the next delivery reads the progress
      // record back to learn which, before it sends anything.
      clients->request_reset();
      std::lock_guard lock(mu);
      ledger.commit_unknown(seq);
      return Delivery::retry(why);
    }
    if (report.failed > 0)
      spdlog::error("{}: transaction {} committed with {} failed records", name, txn_id, report.failed);
    return Delivery::delivered(state);
  }

  Delivery deliver_idempotent(std::span<const Record> batch) {
    if (std::string why = ready(); !why.empty()) return Delivery::retry(why);
    BatchReport& report = new_report();
    std::string value, none;
    for (const Record& r : batch) {
      rd_kafka_resp_err_t e = produce(r, report, none, value);
      if (!e) continue;
      // What was queued is still delivered (at-least-once); the batch is
      // split (too large: the big record ends dead) or retried.
      rd_kafka_flush(clients->producer(), static_cast<int>(o.timeout.count()));
      if (e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
        return Delivery::reject("a record of " + std::to_string(value.size()) +
                                " bytes is larger than the producer's message.max.bytes");
      return Delivery::retry(std::string("cannot queue a record: ") + rd_kafka_err2str(e));
    }
    rd_kafka_flush(clients->producer(), static_cast<int>(o.timeout.count()));
    if (report.outstanding > 0) return Delivery::retry("timed out waiting for the brokers' acknowledgements");
    if (report.failed > 0) {
      std::string why = std::to_string(report.failed) + " of " + std::to_string(batch.size()) +
                        " records failed: " + rd_kafka_err2str(report.first_error);
      if (report.too_large) return Delivery::reject(why);
      return Delivery::retry(why);
    }
    return Delivery::delivered();
  }
};

KafkaSink::KafkaSink(config::Settings& s, const std::string& host_id, asio::any_io_executor executor)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  (void)executor;   // librdkafka calls run on the sink's own thread
  m.host_id = host_id;
  m.o = kafka::parse_options(s, host_id);
  m.ledger = kafka::Ledger(host_id);
  std::string first = m.o.brokers.substr(0, m.o.brokers.find(','));
  m.name = "kafka:" + first + "/" + m.o.topic;
  m.clients = std::make_unique<kafka::Clients>(m.o, m.name, on_delivery);
}

KafkaSink::~KafkaSink() = default;

const std::string& KafkaSink::name() const { return impl_->name; }

std::string KafkaSink::guarantee() const {
  if (impl_->o.transactional)
    return "exactly-once for read_committed consumers: each batch and its progress record commit "
           "in one Kafka transaction; after a restart, rows the progress topic shows as "
           "committed are acknowledged without sending them again";
  return "at-least-once: idempotent producer (no duplicates within a producer session); a relay "
         "crash between the brokers' ack and the outbox ack sends the batch again";
}

std::optional<std::string> KafkaSink::open(const OpenContext& context) {
  Impl& m = *impl_;
  m.lookup = context.keys_in_outbox;
  const std::optional<std::string>& committed_state = context.committed_state;
  std::random_device rd;
  m.session = fmt::format("{:08x}", rd());
  m.clients->start_producer();
  if (m.o.transactional) {
    uint64_t committed = 0;
    if (committed_state) {
      try {
        committed = std::stoull(*committed_state);
      } catch (const std::exception&) {
        spdlog::warn("{}: stored state \"{}\" is not a transaction number; ignored", m.name,
                     *committed_state);
      }
    }
    m.inherit(m.clients->read_progress(), committed);
  }
  spdlog::info("{}: connected ({}), {}", m.name, m.o.brokers,
               m.o.transactional ? "transactional.id " + m.o.transactional_id : std::string("idempotent"));
  return std::nullopt;
}

asio::awaitable<Delivery> KafkaSink::deliver(std::span<const Record> batch) {
  Impl& m = *impl_;
  auto work = [&m, batch]() -> Delivery {
    try {
      return m.o.transactional ? m.deliver_transactional(batch) : m.deliver_idempotent(batch);
    } catch (const std::exception& e) {
      return Delivery::retry(e.what());
    }
  };
  co_return co_await run_blocking(m.pool, work);
}

void KafkaSink::committed(const std::string& state) noexcept {
  try {
    Impl& m = *impl_;
    uint64_t seq = std::stoull(state);
    std::lock_guard lock(m.mu);
    m.ledger.committed(seq);
  } catch (const std::exception& e) {
    // Keeping entries longer only makes progress records longer.
    spdlog::error("kafka: cannot note the ack of delivery {}: {}", state, e.what());
  }
}


}  // namespace tailbox::sinks
