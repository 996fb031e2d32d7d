// kafka_mock: test tool around librdkafka's mock cluster (rdkafka_mock.h).
//
//   kafka_mock serve --brokers 3 --topic logs:6 --topic logs.tailbox-progress:3
//     Starts an in-process mock cluster, creates the topics, prints
//     "BOOTSTRAP <host:port,...>" and then takes commands on stdin, one per
//     line, answering "OK" or "ERR <why>":
//       produce_errors <count> <error code>   next <count> Produce requests fail
//       request_errors <api key> <count> <error code>
//       broker_down <id> / broker_up <id>
//       rtt <id> <ms>                         slows a broker down
//     Exits when stdin closes.
//
//   kafka_mock count <bootstrap> <topic>
//     Prints how many records the topic took (sum of its high watermarks).
//
//   kafka_mock produce <bootstrap> <topic> <partition> <key> <value hex> [name=value]...
//     Produces one record (a plain producer, no transaction), e.g. a copy of a
//     record the dump printed; exits 0 once the mock acknowledged it.
//
//   kafka_mock dump <bootstrap> <topic>
//     Reads every message of every partition from the start (the mock ignores
//     isolation.level: it shows aborted and open transactions too) and prints
//     one line per message: partition, offset, key, then each header as
//     name=value, then value=<the value in hex>, tab-separated.
//
// The mock is a test double for a Kafka cluster: see README (Kafka sink) for
// what it does not cover.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

int serve(int argc, char** argv) {
  int brokers = 3;
  std::vector<std::pair<std::string, int>> topics;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--brokers") {
      brokers = std::atoi(value.c_str());
    } else if (flag == "--topic") {
      auto colon = value.rfind(':');
      topics.emplace_back(value.substr(0, colon), colon == std::string::npos ? 1 : std::atoi(value.c_str() + colon + 1));
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", "", err, sizeof err);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (!rk) {
    std::fprintf(stderr, "rd_kafka_new: %s\n", err);
    return 1;
  }
  rd_kafka_mock_cluster_t* mc = rd_kafka_mock_cluster_new(rk, brokers);
  if (!mc) {
    std::fprintf(stderr, "cannot start the mock cluster\n");
    return 1;
  }
  for (auto& [name, parts] : topics) {
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, name.c_str(), parts, std::min(brokers, 3));
    if (e) {
      std::fprintf(stderr, "topic %s: %s\n", name.c_str(), rd_kafka_err2str(e));
      return 1;
    }
  }
  std::printf("BOOTSTRAP %s\n", rd_kafka_mock_cluster_bootstraps(mc));
  std::fflush(stdout);
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    bool ok = true;
    if (cmd == "produce_errors" || cmd == "request_errors") {
      int api = 0, count = 0, code = 0;   // 0: Produce
      if (cmd == "request_errors") in >> api;
      in >> count >> code;
      std::vector<rd_kafka_resp_err_t> errs(static_cast<size_t>(count), static_cast<rd_kafka_resp_err_t>(code));
      rd_kafka_mock_push_request_errors_array(mc, static_cast<int16_t>(api), errs.size(), errs.data());
    } else if (cmd == "broker_down" || cmd == "broker_up") {
      int id = 0;
      in >> id;
      ok = (cmd == "broker_down" ? rd_kafka_mock_broker_set_down(mc, id) : rd_kafka_mock_broker_set_up(mc, id)) ==
           RD_KAFKA_RESP_ERR_NO_ERROR;
    } else if (cmd == "rtt") {
      int id = 0, ms = 0;
      in >> id >> ms;
      ok = rd_kafka_mock_broker_set_rtt(mc, id, ms) == RD_KAFKA_RESP_ERR_NO_ERROR;
    } else if (cmd.empty()) {
      continue;
    } else {
      std::printf("ERR unknown command %s\n", cmd.c_str());
      std::fflush(stdout);
      continue;
    }
    std::printf(ok ? "OK\n" : "ERR failed\n");
    std::fflush(stdout);
  }
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(rk);
  return 0;
}

// The topic's partition count, or 0 (after saying why) when it is unknown.
int partitions_of(rd_kafka_t* c, const std::string& topic) {
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(c, topic.c_str(), nullptr);
  const rd_kafka_metadata_t* md = nullptr;
  int parts = 0;
  if (rd_kafka_metadata(c, 0, rkt, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (md->topic_cnt == 1 && !md->topics[0].err) parts = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
  }
  rd_kafka_topic_destroy(rkt);
  if (parts <= 0) std::fprintf(stderr, "no metadata for %s\n", topic.c_str());
  return parts;
}

int dump(const std::string& bootstrap, const std::string& topic) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), err, sizeof err);
  rd_kafka_conf_set(conf, "group.id", "kafka-mock-dump", err, sizeof err);
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err);
  rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof err);
  rd_kafka_conf_set(conf, "isolation.level", "read_committed", err, sizeof err);
  rd_kafka_t* c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (!c) {
    std::fprintf(stderr, "rd_kafka_new: %s\n", err);
    return 1;
  }
  int parts = partitions_of(c, topic);
  if (parts <= 0) return 1;
  // Read each partition up to its high watermark (asked first), so that an
  // EOF event seen twice for one partition cannot end the dump early.
  std::vector<int64_t> high(static_cast<size_t>(parts)), next(static_cast<size_t>(parts), 0);
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(parts);
  int todo = 0;
  for (int p = 0; p < parts; ++p) {
    int64_t lo = 0, hi = 0;
    if (rd_kafka_query_watermark_offsets(c, topic.c_str(), p, &lo, &hi, 10000)) {
      std::fprintf(stderr, "no watermarks for %s [%d]\n", topic.c_str(), p);
      return 1;
    }
    high[static_cast<size_t>(p)] = hi;
    if (lo > 0) {
      // The mock keeps only a few MiB per partition and drops older records:
      // a check on what is left would be meaningless.
      std::fprintf(stderr, "%s [%d]: the mock dropped offsets below %lld (it keeps a few MiB per "
                   "partition): give the topic more partitions\n", topic.c_str(), p, static_cast<long long>(lo));
      return 1;
    }
    next[static_cast<size_t>(p)] = lo;
    if (hi > lo) ++todo;
    rd_kafka_topic_partition_list_add(list, topic.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  }
  rd_kafka_assign(c, list);
  rd_kafka_topic_partition_list_destroy(list);
  int idle = 0;
  while (todo > 0 && idle < 300) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(c, 100);
    if (!m) {
      ++idle;
      continue;
    }
    idle = 0;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      // nothing: done is decided by offsets
    } else if (m->err) {
      std::fprintf(stderr, "consume: %s\n", rd_kafka_message_errstr(m));
    } else {
      auto p = static_cast<size_t>(m->partition);
      std::string out = std::to_string(m->partition) + "\t" + std::to_string(m->offset) + "\t" +
                        std::string(static_cast<const char*>(m->key), m->key_len);
      rd_kafka_headers_t* hdrs = nullptr;
      if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char* name;
        const void* value;
        size_t size;
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i)
          out += std::string("\t") + name + "=" + std::string(static_cast<const char*>(value), size);
      }
      static const char* hex = "0123456789abcdef";
      out += "\tvalue=";
      for (size_t i = 0; i < m->len; ++i) {
        unsigned char b = static_cast<const unsigned char*>(m->payload)[i];
        out += hex[b >> 4];
        out += hex[b & 15];
      }
      std::puts(out.c_str());
      if (m->offset + 1 >= high[p] && next[p] < high[p]) --todo;
      next[p] = m->offset + 1;
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
  if (todo > 0) {
    std::fprintf(stderr, "timed out before the end of %s\n", topic.c_str());
    return 1;
  }
  return 0;
}

// Sum of the high watermarks of `topic`'s partitions: the records it holds
// (the mock writes no transaction markers).
int count(const std::string& bootstrap, const std::string& topic) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), err, sizeof err);
  rd_kafka_t* c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (!c) return 1;
  int parts = partitions_of(c, topic);
  if (parts <= 0) return 1;
  long long total = 0;
  for (int p = 0; p < parts; ++p) {
    int64_t lo = 0, hi = 0;
    if (rd_kafka_query_watermark_offsets(c, topic.c_str(), p, &lo, &hi, 10000)) return 1;
    total += hi;
  }
  std::printf("%lld\n", total);
  rd_kafka_destroy(c);
  return 0;
}

int produce(int argc, char** argv) {
  const std::string bootstrap = argv[2], topic = argv[3], key = argv[5], hex = argv[6];
  std::string value;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) value += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), err, sizeof err);
  rd_kafka_conf_set(conf, "acks", "all", err, sizeof err);
  static rd_kafka_resp_err_t result = RD_KAFKA_RESP_ERR__IN_PROGRESS;
  rd_kafka_conf_set_dr_msg_cb(conf, [](rd_kafka_t*, const rd_kafka_message_t* m, void*) { result = m->err; });
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (!rk) {
    std::fprintf(stderr, "rd_kafka_new: %s\n", err);
    return 1;
  }
  rd_kafka_headers_t* headers = rd_kafka_headers_new(static_cast<size_t>(argc - 7));
  for (int i = 7; i < argc; ++i) {
    std::string kv = argv[i];
    size_t eq = kv.find('=');
    rd_kafka_header_add(headers, kv.c_str(), static_cast<ssize_t>(eq), kv.c_str() + eq + 1,
                        static_cast<ssize_t>(kv.size() - eq - 1));
  }
  rd_kafka_resp_err_t e = rd_kafka_producev(
      rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(std::atoi(argv[4])),
      RD_KAFKA_V_KEY(key.data(), key.size()), RD_KAFKA_V_VALUE(value.data(), value.size()),
      RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
  if (e) {
    rd_kafka_headers_destroy(headers);
    std::fprintf(stderr, "produce: %s\n", rd_kafka_err2str(e));
    return 1;
  }
  rd_kafka_flush(rk, 10000);
  rd_kafka_destroy(rk);
  if (result) std::fprintf(stderr, "delivery: %s\n", rd_kafka_err2str(result));
  return result ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "serve") return serve(argc, argv);
  if (argc == 4 && std::string(argv[1]) == "count") return count(argv[2], argv[3]);
  if (argc == 4 && std::string(argv[1]) == "dump") return dump(argv[2], argv[3]);
  if (argc >= 7 && std::string(argv[1]) == "produce") return produce(argc, argv);
  std::fprintf(stderr, "usage: kafka_mock serve [--brokers N] [--topic name:partitions]... | count|dump <bootstrap> <topic> | produce <bootstrap> <topic> <partition> <key> <value hex> [name=value]...\n");
  return 2;
}
