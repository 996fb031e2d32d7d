#include "sinks/kafka/clients.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "core/secret.hpp"
#include "sinks/kafka/kafka_sink.hpp"

namespace tailbox::sinks::kafka {

// librdkafka's settings, secrets included (read now, never logged).
Conf Clients::base_conf(bool for_producer) {
  Conf owned(rd_kafka_conf_new());
  rd_kafka_conf_t* conf = owned.get();
  char err[512];
  auto set = [&](const std::string& k, const std::string& v) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
      throw std::runtime_error("librdkafka property " + k + ": " + err);
  };
  set("bootstrap.servers", o_.brokers);
  set("client.id", "tailbox");
  for (auto& [k, v] : o_.properties) set(k, v);
  for (auto& s : o_.secrets) set(s.property, read_secret(s.what, s.file, s.env));
  rd_kafka_conf_set_opaque(conf, this);
  rd_kafka_conf_set_log_cb(conf, [](const rd_kafka_t*, int level, const char* fac, const char* buf) {
    if (level <= 3) spdlog::error("kafka: {}: {}", fac, buf);
    else if (level == 4) spdlog::warn("kafka: {}: {}", fac, buf);
    else spdlog::debug("kafka: {}: {}", fac, buf);
  });
  rd_kafka_conf_set_error_cb(conf, [](rd_kafka_t* rk, int e, const char* reason, void* opaque) {
    auto* self = static_cast<Clients*>(opaque);
    if (e == RD_KAFKA_RESP_ERR__FATAL) {
      char why[512];
      rd_kafka_fatal_error(rk, why, sizeof why);
      spdlog::error("{}: fatal producer error: {}; a new producer will be made", self->name_, why);
      self->reset_ = true;
      return;
    }
    if (auto held = self->log_limit_.allow("error_cb"))
      spdlog::warn("{}: {}{}", self->name_, reason,
                   *held ? " (" + std::to_string(*held) + " more not logged)" : "");
  });
  if (for_producer) {
    set("enable.idempotence", "true");
    set("acks", "all");
    set("linger.ms", "5");
    set("compression.type", o_.compression);
    set("message.timeout.ms", std::to_string(o_.timeout.count()));
    if (o_.transactional) {
      set("transactional.id", o_.transactional_id);
      set("transaction.timeout.ms", std::to_string(std::max<int64_t>(60'000, o_.timeout.count() + 10'000)));
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery_);
  }
  return owned;
}

// A client; it owns `conf` from now on (freed here when creation fails).
Client Clients::make(rd_kafka_type_t type, Conf conf) {
  char err[512];
  Client rk(rd_kafka_new(type, conf.get(), err, sizeof err));
  if (!rk) throw std::runtime_error(std::string("cannot create a Kafka client: ") + err);
  (void)conf.release();  // rd_kafka_new took it
  return rk;
}

// Partition count of `t`, or throws naming what is wrong.
int32_t Clients::partitions_of(rd_kafka_t* rk, const std::string& t) {
  Topic rkt(rd_kafka_topic_new(rk, t.c_str(), nullptr));
  const rd_kafka_metadata_t* raw = nullptr;
  rd_kafka_resp_err_t e =
      rd_kafka_metadata(rk, 0, rkt.get(), &raw, static_cast<int>(o_.timeout.count()));
  Metadata md(raw);
  rkt.reset();
  if (e) throw std::runtime_error("cannot read metadata of topic " + t + ": " + rd_kafka_err2str(e));
  int32_t n = 0;
  rd_kafka_resp_err_t te = RD_KAFKA_RESP_ERR_NO_ERROR;
  if (md->topic_cnt == 1) {
    te = md->topics[0].err;
    n = md->topics[0].partition_cnt;
  }
  md.reset();
  if (te || n <= 0)
    throw std::runtime_error("topic " + t + " is not available (" +
                             (te ? rd_kafka_err2str(te) : std::string("no partitions")) +
                             "); create it first (see README, Kafka sink)");
  return n;
}

void Clients::destroy_producer(std::chrono::milliseconds flush) {
  if (!producer_) return;
  rd_kafka_flush(producer_.get(), static_cast<int>(flush.count()));
  producer_.reset();
}

// Builds the producer; in transactional mode also fences the previous one
// (a crashed relay's open transaction is aborted by the coordinator).
void Clients::start_producer() {
  destroy_producer();
  reset_ = false;
  producer_ = make(RD_KAFKA_PRODUCER, base_conf(true));
  partitions_of(producer_.get(), o_.topic);
  if (!o_.transactional) return;
  progress_partitions_ = partitions_of(producer_.get(), o_.progress_topic);
  if (rd_kafka_error_t* e = rd_kafka_init_transactions(producer_.get(), static_cast<int>(o_.timeout.count()))) {
    std::string why = rd_kafka_error_string(e);
    rd_kafka_error_destroy(e);
    destroy_producer();
    throw std::runtime_error("cannot start Kafka transactions (transactional.id " +
                             o_.transactional_id + "): " + why);
  }
}

// The latest committed progress record of this relay, or "" (read_committed).
// Reads backwards from the partition's high watermark (asked after
// init_transactions, on a read_uncommitted handle: a read_committed one
// would answer the last stable offset) in growing windows: the progress
// partition is shared with other relays and its active segment is not
// compacted. The first window must be read up to that watermark: a
// read_committed consumer stops at the last stable offset, so another
// relay's open transaction makes this wait (and open() fail and retry)
// rather than return an older record. Throws when it cannot finish.
std::string Clients::read_progress() {
  int32_t p = kafka_progress_partition(o_.transactional_id, progress_partitions_);
  int64_t lo = 0, hi = 0;
  {
    Conf conf = base_conf(false);
    char err[512];
    rd_kafka_conf_set(conf.get(), "isolation.level", "read_uncommitted", err, sizeof err);
    Client w = make(RD_KAFKA_CONSUMER, std::move(conf));
    rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(w.get(), o_.progress_topic.c_str(), p, &lo,
                                                             &hi, static_cast<int>(o_.timeout.count()));
    w.reset();
    if (e)
      throw std::runtime_error("cannot read the progress topic " + o_.progress_topic + ": " +
                               rd_kafka_err2str(e));
  }
  if (hi <= lo) return "";
  Conf conf = base_conf(false);
  char err[512];
  for (auto [k, v] : {std::pair{"group.id", "tailbox-progress-reader"},
                      std::pair{"enable.auto.commit", "false"},
                      std::pair{"enable.partition.eof", "true"},
                      std::pair{"isolation.level", "read_committed"},
                      std::pair{"auto.offset.reset", "earliest"}})
    rd_kafka_conf_set(conf.get(), k, v, err, sizeof err);
  Client c = make(RD_KAFKA_CONSUMER, std::move(conf));
  std::string latest, failure;
  int64_t end = hi, window = 512;
  while (failure.empty() && latest.empty() && end > lo) {
    int64_t start = std::max(lo, end - window);
    PartitionList list(rd_kafka_topic_partition_list_new(1));
    rd_kafka_topic_partition_list_add(list.get(), o_.progress_topic.c_str(), p)->offset = start;
    rd_kafka_assign(c.get(), list.get());
    list.reset();
    auto deadline = std::chrono::steady_clock::now() + o_.timeout;   // per window
    for (bool done = false; !done;) {
      if (std::chrono::steady_clock::now() > deadline) {
        failure = "timed out reading the progress topic " + o_.progress_topic + " [" +
                  std::to_string(p) + "] up to offset " + std::to_string(end) +
                  " (another producer's open transaction there may hold read_committed back)";
        break;
      }
      Message owned(rd_kafka_consumer_poll(c.get(), 200));
      rd_kafka_message_t* m = owned.get();
      if (!m) continue;
      if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        done = m->offset >= end;
      } else if (m->err) {
        if (auto held = log_limit_.allow("progress_read"))
          spdlog::warn("{}: reading progress: {}", name_, rd_kafka_message_errstr(m));
      } else if (m->offset >= end) {
        done = true;
      } else {
        if (m->key && std::string_view(static_cast<const char*>(m->key), m->key_len) == o_.transactional_id)
          latest.assign(static_cast<const char*>(m->payload), m->len);
        done = m->offset + 1 >= end;
      }
    }
    end = start;
    window *= 4;
  }
  rd_kafka_consumer_close(c.get());
  c.reset();
  if (!failure.empty()) throw std::runtime_error(failure);
  return latest;
}

void Clients::read_topic(const OnRecord& on_record) {
  Conf conf = base_conf(false);
  char err[512];
  for (auto [k, v] : {std::pair{"group.id", "tailbox-audit"},   // never joined: assign() only
                      std::pair{"enable.auto.commit", "false"},
                      std::pair{"enable.auto.offset.store", "false"},
                      std::pair{"enable.partition.eof", "true"},
                      std::pair{"isolation.level", "read_committed"}})
    if (rd_kafka_conf_set(conf.get(), k, v, err, sizeof err) != RD_KAFKA_CONF_OK)
      throw std::runtime_error(std::string("librdkafka property ") + k + ": " + err);
  Client c = make(RD_KAFKA_CONSUMER, std::move(conf));
  const int32_t partitions = partitions_of(c.get(), o_.topic);
  PartitionList list(rd_kafka_topic_partition_list_new(partitions));
  int32_t left = 0;
  for (int32_t p = 0; p < partitions; ++p) {
    int64_t lo = 0, hi = 0;
    if (rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(
            c.get(), o_.topic.c_str(), p, &lo, &hi, static_cast<int>(o_.timeout.count())))
      throw std::runtime_error("cannot read the offsets of " + o_.topic + " [" + std::to_string(p) +
                               "]: " + rd_kafka_err2str(e));
    if (hi <= lo) continue;   // empty: no end-of-partition event to wait for
    rd_kafka_topic_partition_list_add(list.get(), o_.topic.c_str(), p)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
    ++left;
  }
  if (left == 0) return;
  if (rd_kafka_resp_err_t e = rd_kafka_assign(c.get(), list.get()))
    throw std::runtime_error("cannot read topic " + o_.topic + ": " + rd_kafka_err2str(e));
  std::vector<bool> ended(static_cast<size_t>(partitions), false);
  auto deadline = std::chrono::steady_clock::now() + o_.timeout;   // from the last progress
  std::string failure;
  while (left > 0 && failure.empty()) {
    if (std::chrono::steady_clock::now() > deadline) {
      failure = "reading topic " + o_.topic + ": nothing for " +
                std::to_string(o_.timeout.count()) + " ms before the end of " +
                std::to_string(left) + " partitions (an open transaction holds read_committed "
                "back, or the brokers are away)";
      break;
    }
    Message owned(rd_kafka_consumer_poll(c.get(), 200));
    const rd_kafka_message_t* m = owned.get();
    if (!m) continue;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      if (m->partition >= 0 && m->partition < partitions && !ended[m->partition]) {
        ended[m->partition] = true;
        --left;
      }
    } else if (m->err) {
      // Brokers away: librdkafka reconnects (bounded by the deadline). Anything else ends it.
      if (m->err != RD_KAFKA_RESP_ERR__TRANSPORT && m->err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        failure = "reading topic " + o_.topic + ": " + rd_kafka_message_errstr(m);
      continue;
    } else {
      on_record(*m);
    }
    deadline = std::chrono::steady_clock::now() + o_.timeout;
  }
  rd_kafka_consumer_close(c.get());
  if (!failure.empty()) throw std::runtime_error(failure);
}

}  // namespace tailbox::sinks::kafka
