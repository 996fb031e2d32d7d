// The nats sink's failure classification: a table, no server.
#include "sinks/nats/classify.hpp"

#include <doctest/doctest.h>

#include <vector>

using namespace tailbox::sinks::nats;
using Kind = Failure::Kind;

namespace {

Failure failure(Kind kind, natsStatus status, jsErrCode js_err, std::string text) {
  Failure f;
  f.kind = kind;
  f.status = status;
  f.js_err = js_err;
  f.text = std::move(text);
  return f;
}

}  // namespace

TEST_SUITE("sinks.nats.classify") {
  TEST_CASE("only a message too large for the server or the stream is rejected") {
    struct Row {
      Failure f;
      bool reject;
      std::string reason;
    };
    const std::vector<Row> rows = {
        {[] { Failure f; f.kind = Kind::oversize; f.size = 2000; f.limit = 1024; return f; }(), true,
         "the message (2000 bytes with headers) is larger than the server's max_payload (1024 bytes)"},
        {failure(Kind::publish, NATS_MAX_PAYLOAD, jsErrCode{}, "x"), true,
         "the message is larger than the server's max_payload"},
        {failure(Kind::pub_ack, NATS_OK, JSStreamMessageExceedsMaximumErr, "message size exceeds maximum allowed"),
         true, "message size exceeds maximum allowed"},
        {failure(Kind::pub_ack, NATS_OK, JSStreamNotFoundErr, "stream not found"), false, "stream not found"},
        {failure(Kind::pub_ack, NATS_OK, JSInsufficientResourcesErr, "insufficient resources"), false,
         "insufficient resources"},
        {failure(Kind::publish, NATS_CONNECTION_CLOSED, jsErrCode{}, "Connection Closed"), false,
         "publish: Connection Closed"},
        {failure(Kind::publish, NATS_TIMEOUT, jsErrCode{}, "Timeout"), false, "publish: Timeout"},
        {failure(Kind::build, NATS_NO_MEMORY, jsErrCode{}, "No Memory"), false, "cannot build a message: No Memory"},
        {failure(Kind::no_ack, NATS_OK, jsErrCode{}, "no PubAck for 1 of 2 messages within 10 ms"), false,
         "no PubAck for 1 of 2 messages within 10 ms"},
        {failure(Kind::not_connected, NATS_OK, jsErrCode{}, "nats://h:4222"), false,
         "not connected to NATS (reconnecting to nats://h:4222)"},
        {failure(Kind::connect, NATS_OK, jsErrCode{}, "no servers"), false, "connecting to NATS again: no servers"},
        {failure(Kind::read_back, NATS_OK, jsErrCode{}, "reading stream L back"), false, "reading stream L back"},
        {failure(Kind::other, NATS_OK, jsErrCode{}, "unexpected exception"), false, "unexpected exception"},
    };
    for (const auto& row : rows) {
      Verdict v = classify(row.f);
      INFO(row.reason);
      CHECK(v.reject == row.reject);
      CHECK(v.reason == row.reason);
    }
  }
}
