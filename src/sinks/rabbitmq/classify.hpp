// What a failed publish means for the batch: retry (transient: the broker or
// the network) or reject (the record itself cannot be delivered: the
// dispatcher splits the batch and dead-letters it). Pure; thread-safe.
#pragma once

#include <string>

namespace tailbox::sinks::rabbitmq {

struct Failure {
  enum class Kind {
    returned,       // basic.return of a mandatory message (reply code 312 NO_ROUTE, ...)
    nacked,         // basic.nack: the broker could not take the message
    channel_close,  // channel.close from the broker (reply code)
    connection_close,  // connection.close from the broker (reply code)
    library,        // a rabbitmq-c error (socket, timeout, protocol)
    timeout,        // no confirm within `timeout`
  };
  Kind kind = Kind::library;
  int code = 0;       // the AMQP reply code, when there is one
  std::string text;   // the broker's reply text or the library's message
};

struct Verdict {
  bool reject = false;
  std::string reason;
};

Verdict classify(const Failure& f);

}  // namespace tailbox::sinks::rabbitmq
