// What a failed delivery means for the batch: retry (transient: the server,
// the network, the connection) or reject (the record itself cannot be
// delivered: the dispatcher splits the batch and dead-letters it), with the
// detail reported for it. Every failure of the nats sink goes through
// classify(). Pure; thread-safe.
#pragma once

#include <nats/status.h>

#include <cstdint>
#include <string>

namespace tailbox::sinks::nats {

struct Failure {
  enum class Kind {
    oversize,       // the message with its headers is larger than max_payload (size, limit)
    build,          // libnats could not build a message (status)
    publish,        // js_PublishMsgAsync failed (status)
    pub_ack,        // a negative PubAck (js_err; text: the server's)
    no_ack,         // no PubAck within the timeout, or disconnected meanwhile (text)
    not_connected,  // libnats is reconnecting (text: the servers)
    connect,        // opening a new connection failed (text)
    read_back,      // reading the stream back before publishing again failed (text)
    other,          // anything else thrown while delivering (text)
  };
  Kind kind = Kind::other;
  natsStatus status = NATS_OK;
  jsErrCode js_err = static_cast<jsErrCode>(0);
  int64_t size = 0, limit = 0;
  std::string text;  // the library's or the server's message
};

struct Verdict {
  bool reject = false;
  std::string reason;
};

Verdict classify(const Failure& f);

}  // namespace tailbox::sinks::nats
